"""Running a planned grid: compile its programs, train its chunks, keep what they return.

:mod:`vgjax.run.chunks` compiles a :class:`~vgjax.grid.plan.Plan`'s programs (traced ones
kept between processes by :mod:`vgjax.run.programs`) and holds the one execution path,
:func:`~vgjax.run.chunks.compute_chunks`: a scheduler picks the chunks and trains them (in
this process, or as Ray tasks), hooks handle each finished chunk (keep it in memory, save
its file, write its TensorBoard logs). :func:`vgjax.run.chunks.sweep` returns a whole grid
in memory; :mod:`vgjax.run.pipeline` trains a grid into an output directory, resumably;
:mod:`vgjax.run.distributed` spreads the same chunks over array jobs, JAX processes or Ray.
"""
