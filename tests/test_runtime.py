"""vgjax's JAX defaults (vgjax.runtime): CPU devices, the compilation cache, YNNPACK fusions.

The API path is checked in fresh processes, where JAX has not started yet: with the
automatic set-up, without it (VGJAX_SETUP=0), after JAX already started (a warning), and
with the user's own choices, which win. ``os.cpu_count`` is replaced in those processes so
the checks do not depend on this machine's cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vgjax import runtime

CORES = 3  # what os.cpu_count() says in the subprocesses below


def _clean_env(**extra) -> dict:
    """This process's environment without any device count or cache choice, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS", "VGJAX_SETUP", "VGJAX_CACHE_DIR",
                        "JAX_COMPILATION_CACHE_DIR", "XDG_CACHE_HOME")}
    env["JAX_PLATFORMS"] = "cpu"
    env["VGJAX_CACHE_DIR"] = "off"
    env.update(extra)
    return env


def _python(code: str, env: dict, timeout: int = 300) -> dict:
    """Run ``code`` after ``os.cpu_count`` is made to answer CORES; return the JSON it printed
    last, plus its stderr under ``"stderr"``."""
    prelude = f"import os, json\nos.cpu_count = lambda: {CORES}\n"
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "stderr": proc.stderr}


# A notebook: the API only; what JAX and a sweep's plan see (the sweep itself runs below,
# in the compilation cache check, with the same automatic set-up).
NOTEBOOK = """
    {before}
    from vgjax.config import Config, Grid
    from vgjax.grid.plan import make_plan
    import jax
    plan = make_plan(Config(epochs=2, hist_every=0), Grid((0, 1, 2), (1,), (2,)))
    print(json.dumps({{"devices": jax.device_count(), "mesh": int(plan.mesh.devices.size),
                      "platform": jax.default_backend(),
                      "env_devices": os.environ.get("JAX_NUM_CPU_DEVICES")}}))
"""


def test_api_gets_one_cpu_device_per_core():
    out = _python(NOTEBOOK.format(before=""), _clean_env())
    assert out["devices"] == CORES and out["mesh"] == CORES and out["platform"] == "cpu"
    assert "vgjax: JAX started before" not in out["stderr"], out["stderr"]


def test_api_after_importing_jax_but_before_using_it():
    out = _python(NOTEBOOK.format(before="import jax, jax.numpy; import vgjax"), _clean_env())
    assert out["devices"] == CORES and out["mesh"] == CORES
    assert out["env_devices"] is None  # set through jax.config: nothing leaks to children
    assert "vgjax: JAX started before" not in out["stderr"], out["stderr"]


def test_api_without_the_setup_keeps_jax_as_it_is():
    out = _python(NOTEBOOK.format(before=""), _clean_env(VGJAX_SETUP="0"))
    assert out["devices"] == 1 and out["mesh"] == 1
    assert out["env_devices"] is None


def test_jax_started_first_gives_a_clear_warning():
    out = _python(NOTEBOOK.format(before="import jax; jax.devices()"), _clean_env())
    assert out["devices"] == 1 and out["mesh"] == 1
    err = out["stderr"]
    assert "vgjax: JAX started before vgjax set it up" in err, err
    assert f"1 CPU device(s), not one per core ({CORES})" in err
    assert "import vgjax before running any JAX operation" in err
    assert err.count("JAX started before vgjax") == 1, err


@pytest.mark.parametrize("env, want", [
    (dict(JAX_NUM_CPU_DEVICES="2"), 2),
    (dict(XLA_FLAGS="--xla_force_host_platform_device_count=2"), 2),
], ids=["JAX_NUM_CPU_DEVICES", "XLA_FLAGS"])
def test_the_users_device_count_wins(env, want):
    out = _python(NOTEBOOK.format(before=""), _clean_env(**env))
    assert out["devices"] == want and out["mesh"] == want
    assert "vgjax: JAX started before" not in out["stderr"], out["stderr"]


def test_accelerator_backend_gets_nothing_cpu_specific():
    # JAX is not started here (no TPU on this machine): only what setup() decided is checked.
    code = """
        import sys, vgjax
        s = vgjax.setup()
        print(json.dumps({"env": os.environ.get("JAX_NUM_CPU_DEVICES"), "devices": s.cpu_devices,
                          "notes": s.notes, "jax": "jax" in sys.modules,
                          "cache": s.cache_dir}))
    """
    out = _python(code, _clean_env(JAX_PLATFORMS="tpu", VGJAX_CACHE_DIR="/nonexistent/c"))
    assert out["env"] is None and out["devices"] is None and not out["jax"]
    assert any("not the CPU" in n for n in out["notes"]), out["notes"]
    assert out["cache"] == "/nonexistent/c"  # the compilation cache is not CPU-specific


def test_expects_cpu():
    assert runtime.expects_cpu("cpu", [])
    assert runtime.expects_cpu("cpu", ["xla_cuda12"])  # JAX_PLATFORMS decides
    assert not runtime.expects_cpu("cuda,cpu", [])
    assert not runtime.expects_cpu("tpu", [])
    assert runtime.expects_cpu(None, []) and runtime.expects_cpu("", [])
    assert not runtime.expects_cpu(None, ["xla_cuda12"])
    assert not runtime.expects_cpu("", ["libtpu"])


def test_tests_run_with_the_defaults():
    """This very process: conftest imported vgjax before JAX started."""
    want = int(os.environ.get("JAX_NUM_CPU_DEVICES") or os.cpu_count() or 1)
    assert jax.device_count() == want
    assert jax.config.jax_compilation_cache_dir is None  # tests never use a cache by default


# ------------------------------------------------------------------ compilation cache


def test_cache_dir_follows_xdg_and_the_override():
    home = Path.home()
    assert runtime.default_cache_dir({}) == home / ".cache" / "vgjax" / "jax"
    assert runtime.default_cache_dir({"XDG_CACHE_HOME": "/x/c"}) == Path("/x/c/vgjax/jax")
    assert runtime.default_cache_dir({"XDG_CACHE_HOME": "rel"}) == home / ".cache/vgjax/jax"
    assert runtime.default_cache_dir({"VGJAX_CACHE_DIR": "/y", "XDG_CACHE_HOME": "/x"}) == Path("/y")
    assert runtime.default_cache_dir({"VGJAX_CACHE_DIR": "~/z"}) == home / "z"
    for off in ("off", "OFF", "0", "", "none"):
        assert runtime.default_cache_dir({"VGJAX_CACHE_DIR": off}) is None


def test_cache_setting_in_a_fresh_process(tmp_path):
    code = """
        import vgjax, jax
        first = jax.config.jax_compilation_cache_dir
        vgjax.setup(cache_dir=None)
        off = jax.config.jax_compilation_cache_dir
        print(json.dumps({"first": first, "off": off}))
    """
    out = _python(code, {**_clean_env(XDG_CACHE_HOME=str(tmp_path / "xdg")),
                         "VGJAX_CACHE_DIR": ""})
    # VGJAX_CACHE_DIR="" means off as well; XDG applies only when it is not set at all
    assert out["first"] is None and out["off"] is None
    env = _clean_env(XDG_CACHE_HOME=str(tmp_path / "xdg"))
    del env["VGJAX_CACHE_DIR"]
    out = _python(code, env)
    assert out["first"] == str(tmp_path / "xdg" / "vgjax" / "jax") and out["off"] is None
    # a directory the user gave JAX itself is kept
    out = _python(code, {**env, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "mine")})
    assert out["first"] == out["off"] == str(tmp_path / "mine")


# A second process running the same sweep must load its AOT-compiled program from the
# cache: counted with JAX's own monitoring events, the results compared with the first's.
CACHED = """
    import jax, numpy as np
    from jax import monitoring
    events = []
    monitoring.register_event_listener(lambda e, **kw: events.append(e))
    from vgjax.config import Config
    from vgjax.run.chunks import sweep
    res = sweep(Config(activation="relu", epochs=3, hist_every=0), seeds=(0, 1), depths=(2,),
                widths=(3,))
    np.save({out!r}, res.history["train_loss"])
    print(json.dumps({{"hits": events.count("/jax/compilation_cache/cache_hits"),
                      "misses": events.count("/jax/compilation_cache/cache_misses"),
                      "devices": jax.device_count()}}))
"""


def test_second_process_loads_the_sweep_program_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    env = _clean_env(VGJAX_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    first = _python(CACHED.format(out=str(tmp_path / "a.npy")), env)
    assert first["hits"] == 0 and first["misses"] >= 1
    entries = sorted(p.name for p in cache.iterdir())
    assert entries, "nothing was written to the cache"
    second = _python(CACHED.format(out=str(tmp_path / "b.npy")), env)
    assert second["misses"] == 0 and second["hits"] >= 1, second
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    assert first["devices"] == second["devices"] == CORES


def test_cli_compile_cache_flag(tmp_path):
    """--compile-cache DIR puts the CLI's programs in DIR instead of the default cache."""
    script = Path(sys.executable).with_name("vgjax")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "vgjax.cli"]
    default, flag = tmp_path / "default", tmp_path / "flag"
    env = _clean_env(VGJAX_CACHE_DIR=str(default), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    proc = subprocess.run(cmd + ["sweep", "--epochs", "2", "--hist-every", "0", "--no-tensorboard",
                                 "--widths", "2", "--out", str(tmp_path / "o"),
                                 "--compile-cache", str(flag)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert any(flag.iterdir())
    assert not default.exists(), "the default cache was used despite --compile-cache"


# ------------------------------------------------------------------- compile options


def test_cpu_compiler_options_turn_ynnpack_fusions_off_unless_the_user_chose():
    assert runtime.cpu_compiler_options({}) == {"xla_cpu_experimental_ynn_fusion_type": ""}
    flags = "--xla_cpu_experimental_ynn_fusion_type=dot --xla_foo=1"
    assert runtime.cpu_compiler_options({"XLA_FLAGS": flags}) == {}


class _Lowered:
    """Stands in for jax.stages.Lowered: a jaxlib that does not know ``unknown``."""

    def __init__(self, unknown: str):
        self.unknown, self.calls = unknown, []

    def compile(self, compiler_options=None):
        self.calls.append(dict(compiler_options or {}))
        if compiler_options and self.unknown in compiler_options:
            raise RuntimeError(f"INVALID_ARGUMENT: No such compile option: '{self.unknown}'")
        return "compiled"


def test_compile_drops_an_option_this_jaxlib_does_not_know(monkeypatch):
    monkeypatch.setattr(runtime, "_unknown_options", set())
    fake = _Lowered("xla_cpu_experimental_ynn_fusion_type")
    assert runtime.compile_lowered(fake, "cpu") == "compiled"
    assert fake.calls == [{"xla_cpu_experimental_ynn_fusion_type": ""}, {}]
    fake2 = _Lowered("xla_cpu_experimental_ynn_fusion_type")  # not tried again
    assert runtime.compile_lowered(fake2, "cpu") == "compiled" and fake2.calls == [{}]
    gpu = _Lowered("nothing")
    assert runtime.compile_lowered(gpu, "gpu") == "compiled" and gpu.calls == [{}]


def test_real_jaxlib_answers_an_unknown_compile_option_with_an_exception(monkeypatch):
    """What the fallback relies on: an unknown option raises (XLA_FLAGS would abort)."""
    monkeypatch.setattr(runtime, "_unknown_options", set())
    bogus = "xla_cpu_vgjax_no_such_option"
    monkeypatch.setattr(runtime, "CPU_COMPILER_OPTIONS",
                        {**runtime.CPU_COMPILER_OPTIONS, bogus: "1"})
    lowered = jax.jit(lambda x: jnp.tanh(x) @ x).lower(jnp.ones((4, 4), jnp.float32))
    compiled = runtime.compile_lowered(lowered, "cpu")
    assert runtime._unknown_options == {bogus}
    x = np.ones((4, 4), np.float32)
    np.testing.assert_allclose(compiled(x), np.tanh(x) @ x, rtol=1e-6)
