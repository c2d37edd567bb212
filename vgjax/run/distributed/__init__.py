"""Beyond one machine: array-job shards, multi-process JAX and Ray, all over one chunk store.

A sweep's output directory holds one file per chunk of runs (``OUT/chunks/chunk_NNNNN.npz``,
written atomically by :class:`vgjax.io.chunk_store.ChunkStore`), and every path below runs
the one :func:`vgjax.run.chunks.compute_chunks` with its own
:class:`~vgjax.run.chunks.Scheduler` (*who* computes which chunk, and how) and the file hooks
of :func:`vgjax.run.pipeline.file_hooks`; :func:`vgjax.run.pipeline.finish_sweep` then
assembles the same ``summary.json``, ``history.npz`` and TensorBoard logs from the chunk
files.

Modules: :mod:`.shards` (array jobs), :mod:`.multiprocess`, :mod:`.supervise` (one clear
line when a peer process dies), :mod:`.ray_tasks`.

* **Array jobs** (SLURM ``--array``, Kubernetes Indexed Jobs): :func:`run_shard` computes the
  chunks ``c`` with ``c % N == I`` into a shared directory; the first shard claims it by
  creating ``manifest.json`` with ``os.link`` (atomic, fails if it exists), which also fixes
  the chunk size for every shard, whatever its device count. :func:`merge` assembles.
* **Multi-process JAX** (TPU pods, GPU clusters): :func:`initialize` then
  :func:`run_multiprocess`: every process runs every chunk (the run axis is sharded over the
  devices of all processes), process 0 alone reads and writes the directory.
* **Ray**: :func:`run_ray` runs each missing chunk as a Ray task and saves each result as it
  arrives.
"""

from vgjax.run.distributed import supervise
from vgjax.run.distributed.multiprocess import (ProcessFailed, check_process_flags, initialize,
                                            run_multiprocess)
from vgjax.run.distributed.ray_tasks import (RAY_INSTALL, TaskFailed, compute_one_chunk, run_ray,
                                         worker_env)
from vgjax.run.distributed.shards import (LAYOUT_KEY, claim_shared, fixed_plan, merge, mesh_size,
                                      parse_shard, run_shard, shard_chunks, sharded_layout)

__all__ = ["LAYOUT_KEY", "RAY_INSTALL", "ProcessFailed", "TaskFailed", "check_process_flags",
           "claim_shared", "compute_one_chunk", "fixed_plan", "initialize", "merge",
           "mesh_size", "parse_shard", "run_multiprocess", "run_ray", "run_shard",
           "shard_chunks", "sharded_layout", "supervise", "worker_env"]
