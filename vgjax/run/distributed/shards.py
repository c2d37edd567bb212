"""Array jobs (SLURM ``--array``, Kubernetes Indexed Jobs): shard I of N computes the
chunks ``c % N == I`` into one shared directory, claimed once; :func:`merge` assembles."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Callable

from vgjax.io import outdir
from vgjax.io.chunk_store import ChunkStore
from vgjax.io.outdir import LAYOUT_KEY, plain_json, read_manifest, sharded_layout
from vgjax.io.store import atomic_write_text, sanitize_name
from vgjax.result import LEARN_THRESHOLD
from vgjax.config import Config, Grid


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N; ``ValueError`` (one line) otherwise."""
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ValueError(f"shard: {text!r} is not allowed; allowed: I/N with integers "
                         "0 <= I < N, e.g. 0/4") from None
    if not 0 <= i < n:
        raise ValueError(f"shard: {text!r} is out of range; allowed: I/N with 0 <= I < N")
    return i, n


def refuse_sharded(out: str | Path, config: Config, grid: Grid) -> None:
    """Multi-process and Ray sweeps keep their own chunk layout: not in a sharded directory."""
    if sharded_layout(out, config, grid) is not None:
        raise ValueError(f"out: {os.fspath(out)!r} holds this sweep split into array-job "
                         "shards; allowed: finish it with --shard I/N and 'vgjax merge', or "
                         "a new directory")


def claim_shared(out: str | Path, manifest: dict, layout: dict) -> dict:
    """Claim ``out`` for the shards of one sweep; return the layout every shard must use.

    Safe when many shards start at once: the manifest (config, grid and ``layout``) is
    written to a temp file and hard-linked to ``manifest.json``, which fails if any shard
    got there first; then the manifest in place is compared with ours. A directory holding
    another sweep, a sweep run without shards, or foreign files is refused (one line).
    """
    label = os.fspath(out)
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"out: {label!r} is a file; allowed: a directory path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"out: {label!r} cannot be created ({e.strerror}); allowed: a "
                         "directory you can write to") from None
    ours = plain_json({**manifest, LAYOUT_KEY: layout})
    mpath = path / outdir.MANIFEST_NAME
    if not mpath.exists():
        foreign = sorted(e.name for e in path.iterdir()
                         if e.name not in outdir.OWNED_NAMES and not e.name.startswith("."))
        if foreign:
            raise ValueError(f"out: {label!r} is not empty and holds no vgjax sweep (found "
                             f"{foreign[0]!r}); allowed: a new or empty directory")
        tmp = path / f".{outdir.MANIFEST_NAME}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        atomic_write_text(tmp, json.dumps(ours, sort_keys=True, indent=1) + "\n")
        try:
            os.link(tmp, mpath)  # atomic and exclusive: exactly one shard wins
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    theirs = read_manifest(path)
    for key in ("config", "grid"):
        if theirs.get(key) != ours[key]:
            raise ValueError(f"out: {label!r} holds a sweep with a different {key}; allowed: "
                             "the same command for every shard, or a new directory")
    got = theirs.get(LAYOUT_KEY)
    if not isinstance(got, dict):
        raise ValueError(f"out: {label!r} holds a sweep run without --shard; allowed: a new "
                         "directory for a sharded sweep")
    if got.get("shards") != layout["shards"]:
        raise ValueError(f"out: {label!r} is split into {got.get('shards')} shards, not "
                         f"{layout['shards']}; allowed: --shard I/{got.get('shards')}")
    (path / outdir.CHUNKS_DIR).mkdir(exist_ok=True)
    return got


def fixed_plan(config: Config, grid: Grid, chunk_size: int, devices: list | None = None):
    """A plan cutting the grid into chunks of exactly ``chunk_size`` runs on any device count.

    The mesh uses the largest number of ``devices`` (default all) that divides the chunk
    size, so chunk boundaries (hence chunk files) never depend on the machine.
    """
    import jax

    from vgjax.grid.plan import default_mesh, make_plan
    devices = list(devices if devices is not None else jax.devices())
    k = mesh_size(len(devices), chunk_size)
    return make_plan(config, grid, chunk_size=chunk_size, mesh=default_mesh(devices[:k]))


def mesh_size(n_devices: int, chunk_size: int) -> int:
    """The largest device count <= ``n_devices`` that divides ``chunk_size``."""
    return max(d for d in range(1, min(n_devices, chunk_size) + 1) if chunk_size % d == 0)


def shard_chunks(n_chunks: int, shard: int, n_shards: int) -> list[int]:
    """Chunks of shard ``shard`` of ``n_shards``: round robin, so shards get equal work."""
    return list(range(shard, n_chunks, n_shards))


def run_shard(config: Config, grid: Grid, out: str | Path, shard: int, n_shards: int, *,
              chunk_size: int | None = None, prefix: str = "sweep",
              progress: Callable[[int], None] | None = None) -> list[int]:
    """Compute shard ``shard`` of ``n_shards`` of the sweep into the shared directory ``out``.

    The first shard to start fixes the chunk size in ``manifest.json`` (``chunk_size``, or
    from memory and the number of shards); finished chunks are skipped, so a rerun of a
    killed shard resumes. Returns the chunk indices of this shard. Each shard records its
    device and timing in ``OUT/chunks/shard_I_of_N.json`` for the merged summary.
    """
    from vgjax.grid.plan import make_plan
    from vgjax.run.chunks import Scheduler, compute_chunks, new_timing, progress_hook
    from vgjax.run.pipeline import device_kind

    if not 0 <= shard < n_shards:
        raise ValueError(f"shard: {shard}/{n_shards} is out of range; allowed: 0 <= I < N")
    proposal = make_plan(config, grid, chunk_size=chunk_size)
    size = proposal.chunk_size
    if chunk_size is None:  # at least one chunk per shard where the grid allows it
        n_dev = proposal.mesh.devices.size
        per_shard = -(-len(proposal.runs) // n_shards)
        size = max(n_dev, min(size, -(-per_shard // n_dev) * n_dev))
    layout = claim_shared(out, outdir.make_manifest(config, grid),
                          {"chunk_size": size, "shards": n_shards,
                           "prefix": sanitize_name(prefix)})
    if chunk_size is not None and layout["chunk_size"] != chunk_size:
        raise ValueError(f"chunk_size: {chunk_size} differs from the {layout['chunk_size']} "
                         f"fixed in {str(Path(out) / outdir.MANIFEST_NAME)!r}; allowed: the same "
                         "value for every shard, or none")
    if progress is not None:
        progress(0)
    plan = fixed_plan(config, grid, int(layout["chunk_size"]))
    mine = shard_chunks(plan.n_chunks, shard, n_shards)
    store = ChunkStore(out)
    timing = new_timing()
    record_path = store.dir / f"shard_{shard}_of_{n_shards}.json"
    trained: list[int] = []
    hooks = [lambda done: store.save(done.index, done.arrays) if done.trained else None,
             lambda done: trained.append(done.index) if done.trained else None]
    if progress is not None:
        hooks.append(progress_hook(progress))
    compute_chunks(plan, scheduler=Scheduler(select=lambda n: shard_chunks(n, shard, n_shards)),
                   hooks=hooks, stored=store, keep=lambda arrays: {}, timing=timing)
    # A rerun that computed nothing keeps the record of the run that computed the chunks
    # (its device goes into the merged summary).
    if trained or not record_path.exists():
        record = {"device": device_kind(plan.mesh), "engine": plan.engine,
                  "chunks": mine, "timing": timing}
        atomic_write_text(record_path, json.dumps(record, sort_keys=True))
    return mine


def merge(out: str | Path, *, tensorboard: bool = True, prefix: str | None = None,
          logdir: str | Path | None = None, learn_threshold: float = LEARN_THRESHOLD,
          progress: Callable[[int], None] | None = None):
    """Assemble a sharded sweep in ``out`` once every chunk exists.

    Returns the :class:`vgjax.run.pipeline.SweepOutput`. Raises
    :class:`vgjax.run.pipeline.MissingChunks` (one line: which chunks, which shards) otherwise.
    ``prefix`` defaults to the one the shards were started with.
    """
    from vgjax.grid.plan import Layout, run_table
    from vgjax.run import pipeline
    from vgjax.run.chunks import new_timing

    path = Path(out)
    m = read_manifest(path) if path.is_dir() else None
    if m is None:
        raise ValueError(f"out: {os.fspath(out)!r} holds no vgjax sweep (no manifest.json); "
                         "allowed: a directory that 'vgjax sweep --shard' wrote")
    if not isinstance(m.get(LAYOUT_KEY), dict):
        raise ValueError(f"out: {os.fspath(out)!r} holds a sweep run without --shard; "
                         "allowed: a directory that 'vgjax sweep --shard' wrote (rerun "
                         "the sweep command itself to finish this one)")
    try:
        config = Config.from_dict(m["config"])
        grid = Grid.from_dict(m["grid"])
        shards = m[LAYOUT_KEY]
        size, n_shards = int(shards["chunk_size"]), int(shards["shards"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"out: {str(path / outdir.MANIFEST_NAME)!r} is invalid ({e})") from None
    store = ChunkStore(path)
    records = []
    for p in sorted(store.dir.glob(f"shard_*_of_{n_shards}.json")):
        try:
            records.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    timing = new_timing()
    for r in records:
        for k in ("compile_s", "train_s"):
            timing[k] += float(r.get("timing", {}).get(k, 0.0))
    extra = {k: "; ".join(sorted({str(r.get(k)) for r in records})) or "unknown"
             for k in ("device", "engine")}
    # The run table is built here, not planned: merging needs no devices, and a config
    # loaded with user objects or arrays can be merged though it cannot be trained again.
    layout = Layout(config, grid, run_table(grid, config), size)
    done = store.done()
    lacking = sorted({c % n_shards for c in range(layout.n_chunks) if c not in done})
    hint = (f" (shards {', '.join(f'{s}/{n_shards}' for s in lacking)} have not finished; "
            "run them, then merge again)") if lacking else ""
    return pipeline.finish_sweep(layout, path, tensorboard=tensorboard,
                                 prefix=prefix or shards.get("prefix", "sweep"),
                                 logdir=logdir, learn_threshold=learn_threshold,
                                 timing=timing, extra=extra, hint=hint, progress=progress)

