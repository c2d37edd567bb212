"""Traced grid programs kept on disk (vgjax.run.programs): a program loaded from the store trains
bit-identically to one traced in the process, a damaged store entry is ignored (the program
is traced again and the entry rewritten), and the key names every static part of a program.

The oracle is the plain path: ``jit(...).lower`` of the traced function, as used when there
is no compilation cache. Processes are simulated in one process by clearing the in-process
compile cache; the cross-process load is checked in test_runtime (cache hits in a second
process).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vgjax.run import programs
from vgjax.grid import plan as plan_mod
from vgjax.run import chunks as chunks_mod
from vgjax.config import Config
from vgjax.grid.plan import make_plan
from vgjax.run.chunks import sweep

GRIDS = {  # one small grid per engine
    "fast": (Config(activation="tanh", init="uniform", epochs=3, hist_every=2), (3,)),
    "wide": (Config(activation="relu", epochs=3, hist_every=2), (9,)),
    "vmap": (Config(activation="relu", epochs=2, hist_every=0, test_gradients=True), (2,)),
}


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
    """One compilation cache for this module's tests: a program several tests build (the
    fast grid, traced again after each kind of damage) is compiled by XLA once."""
    return tmp_path_factory.mktemp("jax-cache")


@pytest.fixture
def store(tmp_path, jax_cache, monkeypatch):
    """The module's compilation cache (so a program loaded from the store is not compiled
    again) and a program store of this test's own; counts how often a grid function is
    traced."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache
    traced = []
    real = chunks_mod.chunk_train

    def counting(*args):
        traced.append(args[4])  # the engine
        return real(*args)
    monkeypatch.setattr(chunks_mod, "chunk_train", counting)
    before = (jax.config.jax_compilation_cache_dir,
              jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", str(jax_cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    compilation_cache.reset_cache()
    chunks_mod._compile.cache_clear()
    try:
        # where the store lives by default: inside the compilation cache in effect
        assert programs.program_dir() == jax_cache / programs.SUBDIR
        own = tmp_path / programs.SUBDIR
        monkeypatch.setattr(programs, "program_dir", lambda: own)
        yield own, traced
    finally:
        jax.config.update("jax_compilation_cache_dir", before[0])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
        compilation_cache.reset_cache()
        chunks_mod._compile.cache_clear()


def _run(engine: str) -> dict:
    chunks_mod._compile.cache_clear()  # a new process, as far as compiling goes
    cfg, widths = GRIDS[engine]
    return sweep(cfg, seeds=(0, 1), depths=(1, 3), widths=widths, engine=engine).history


def _plain(engine: str, monkeypatch) -> dict:
    with monkeypatch.context() as m:
        m.setattr(programs, "program_dir", lambda: None)  # no cache: traced, never exported
        return _run(engine)


def _same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("engine", sorted(GRIDS))
def test_a_stored_program_trains_bit_identically_to_a_traced_one(store, engine, monkeypatch):
    directory, traced = store
    plain = _plain(engine, monkeypatch)
    assert traced == [engine]
    first = _run(engine)  # traces, exports, stores
    assert traced == [engine] * 2 and len(list(directory.glob("*.exported"))) == 1
    second = _run(engine)  # loads: no tracing
    assert traced == [engine] * 2
    _same(plain, first)
    _same(plain, second)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage-with-valid-hash", "empty"])
def test_a_damaged_entry_is_traced_again_and_rewritten(store, damage):
    import hashlib
    directory, traced = store
    good = _run("fast")
    (path,) = directory.glob("*.exported")
    blob = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "flip":
        path.write_bytes(blob[:-100] + bytes([blob[-100] ^ 0xFF]) + blob[-99:])
    elif damage == "garbage-with-valid-hash":  # passes the header check, fails to parse
        head = blob[: blob.index(b"\n", blob.index(b"\n") + 1) + 1]  # magic + key lines
        junk = b"not a flatbuffer" * 10
        path.write_bytes(head + hashlib.sha256(junk).hexdigest().encode() + b"\n" + junk)
    else:
        path.write_bytes(b"")
    again = _run("fast")
    assert traced == ["fast", "fast"], "the damaged entry was not traced again"
    _same(good, again)
    assert programs.load_payload(path.read_text(errors="replace").split("\n")[1]) \
        is not None, "the entry was not rewritten"
    _run("fast")
    assert traced == ["fast", "fast"]  # and the rewritten one loads


def _key(config: Config, **plan_kw) -> str | None:
    plan = make_plan(config, plan_kw.pop("grid", None) or _grid(), **plan_kw)
    (group,) = plan.groups  # the grid's one width: one program
    shape = {"max_depth": plan.max_depth, "p": group.p, "chunk_size": group.size,
             "engine": group.engine, "keep_params": plan.keep_params, "n_blocks": group.n_blocks,
             "features": [name for name, on in plan.features._asdict().items() if on]}
    return programs.program_key(chunks_mod._static_config(plan.config), shape, plan.mesh)


def _grid():
    from vgjax.config import Grid
    return Grid(seeds=(0, 1), depths=(1, 2), widths=(3,))


# A changed value for every field of Config; the per-run values (lr, variances) are traced
# inputs and must not change the key. The architecture (residual, norm) is per-run too; what
# keys the program is which variants its runs use (the plan's features).
CHANGED = {"activation": "tanh", "init": "uniform", "output_init": "glorot_uniform",
           "optimizer": "adam", "momentum": 0.5, "epochs": 3, "batch_size": 16,
           "n_samples": 900, "noise": 0.2, "data_seed": 2, "n_train": 400, "hist_every": 1,
           "test_gradients": True, "loss": "softmax_ce", "data": "moons",
           "probes": ("signal",), "residual": "rezero", "norm": "layer"}
PER_RUN = {"lr": 0.5, "weight_var": 2.0, "bias_var": 0.1}


def test_every_static_config_field_changes_the_key(store):
    base = Config(epochs=2, hist_every=2)
    names = {f.name for f in dataclasses.fields(Config)}
    assert set(CHANGED) | set(PER_RUN) == names, "a new Config field: name it above"
    key = _key(base)
    assert key is not None
    keys = {key}
    for name, value in CHANGED.items():
        other = _key(dataclasses.replace(base, **{name: value}), engine="vmap")
        assert other is not None and other not in keys, name
        keys.add(other)
    for name, value in PER_RUN.items():
        assert _key(dataclasses.replace(base, **{name: value})) == key, name
    fixed = _key(dataclasses.replace(base, residual=0.5))
    assert fixed not in keys and _key(dataclasses.replace(base, residual=2.0)) == fixed


def test_shape_mesh_and_versions_change_the_key(store, monkeypatch):
    import jax
    base = Config(epochs=2, hist_every=2)
    key = _key(base)
    from vgjax.config import Grid
    n = len(jax.devices())
    many = Grid(seeds=tuple(range(2 * n)), depths=(1, 2), widths=(3,))   # 4n runs
    assert _key(base, grid=many) != _key(base, grid=many, chunk_size=n)  # calls of 4n vs n
    assert _key(base, engine="vmap") != key
    assert _key(base, mesh=plan_mod.default_mesh(jax.devices()[:1])) != key or \
        len(jax.devices()) == 1
    monkeypatch.setattr(programs, "source_hash", lambda: "edited")
    assert _key(base) != key
    monkeypatch.setattr(jax, "__version__", "0.0.0")
    assert _key(base) != key


def test_source_hash_reads_every_module_of_the_package():
    """A stored program is keyed by all of vgjax's code, not one subpackage's: an edit to the
    model or an engine must not load a program traced from the old code."""
    import pkgutil
    import vgjax
    modules = {m.name for m in pkgutil.walk_packages(vgjax.__path__, "vgjax.")}
    assert {"vgjax.model", "vgjax.engines.wide", "vgjax.run.programs"} <= modules
    hashed = set()
    for p in programs.source_files():
        parts = p.relative_to(programs.PACKAGE_ROOT).with_suffix("").parts
        hashed.add(".".join(("vgjax",) + (parts[:-1] if parts[-1] == "__init__" else parts)))
    assert modules <= hashed


def test_user_code_or_no_cache_gives_no_key(store, monkeypatch):
    import jax.numpy as jnp
    assert _key(Config(activation=jnp.tanh, epochs=2, hist_every=2)) is None
    monkeypatch.setattr(programs, "program_dir", lambda: None)
    assert _key(Config(epochs=2, hist_every=2)) is None
