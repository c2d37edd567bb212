"""Running a planned grid: compile its programs, train its chunks, keep what they return.

:mod:`vgjax.run.chunks` compiles a :class:`~vgjax.grid.plan.Plan`'s programs (traced ones
kept between processes by :mod:`vgjax.run.programs`) and trains one chunk at a time;
:func:`vgjax.run.chunks.sweep` returns a whole grid in memory. :mod:`vgjax.run.pipeline`
trains a grid into an output directory, resumably, chunk by chunk;
:mod:`vgjax.run.distributed` spreads the same chunks over array jobs, JAX processes or Ray.
"""
