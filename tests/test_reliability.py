"""Reliability: bad input, divergence as a result, interrupted sweeps, determinism, safety.

Most checks share one uninterrupted reference sweep made by the real ``vgjax`` command in a
fresh process (module fixture ``ref``): ReLU/He, depth 10, width 16, seeds 0-7, lrs 0.01 and
5 (most lr=5 runs diverge in their first epoch), 100 epochs, histograms every 25, chunks of
2 runs (8 chunks), TensorBoard on, and the run-name prefix ``../../evil``. That layout is for
1 or 2 CPU devices: the command uses one device per core (or ``JAX_NUM_CPU_DEVICES``), and a
chunk is a multiple of the device count, so on more devices the chunks grow and the seeds
with them (at least 4 chunks: the resume test kills the sweep twice between chunks); see
CLI_DEVICES below. The later processes reuse its compiled program through JAX's persistent
compilation cache (a directory private to this module), so only the first one pays the
compile.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
import warnings
import zipfile
from collections import Counter
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import optimization_flags
from vgjax import cli, figures
from vgjax.io import history
from vgjax.io import outdir
from vgjax.io import store
from vgjax.io import summary
from vgjax import experiments as ex
from vgjax.io import tensorboard as tb
from vgjax.config import Config, Grid, parse_float_list, parse_int_list
from vgjax.run.pipeline import run_sweep
from vgjax.result import CURVES, HIST_ARRAYS, LAYER_STATS, RunTable, SweepResult, final_metric
from vgjax.run.chunks import sweep

ROOT = Path(__file__).resolve().parents[1]
_SCRIPT = Path(sys.executable).with_name("vgjax")
VGJAX = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "vgjax.cli"]

# The CPU devices of every vgjax process started here (the env fixture drops XLA_FLAGS):
# JAX_NUM_CPU_DEVICES when set, else one per core, as vgjax.runtime sets up (checked by
# test_cli_process_uses_the_expected_devices). A chunk is the smallest multiple of it that
# holds 2 runs; there are at least 4 chunks of it.
CLI_DEVICES = int(os.environ.get("JAX_NUM_CPU_DEVICES") or os.cpu_count() or 1)
CHUNK = -(-2 // CLI_DEVICES) * CLI_DEVICES
N_SEEDS = max(8, 2 * CHUNK)
N_RUNS, EPOCHS = 2 * N_SEEDS, 100
N_CHUNKS = -(-N_RUNS // CHUNK)
# The reference command (everything but --out). Seeds are the outer run axis and the lr the
# inner one, so every chunk holds lr=0.01 runs beside lr=5 runs.
REF_ARGS = ["sweep", "--activation", "relu", "--init", "he_uniform", "--depths", "10",
            "--widths", "16", "--seeds", f"0-{N_SEEDS - 1}", "--lrs", "0.01,5", "--epochs",
            str(EPOCHS), "--hist-every", "25", "--chunk-size", str(CHUNK), "--name", "../../evil"]
# The same grid with a sane learning rate in the lr=5 slot.
SANE_ARGS = [a if a != "0.01,5" else "0.01,0.02" for a in REF_ARGS]
LR_SANE, LR_BIG = np.float32(0.01), np.float32(5.0)
TIMEOUT = 600


# ------------------------------------------------------------------------------- helpers


def _run(args, *, env, cwd, timeout=TIMEOUT):
    return subprocess.run(VGJAX + list(args), env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def _check_ok(proc):
    assert proc.returncode == 0, \
        f"rc {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (relative) -> file bytes, or None for a directory."""
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = None if p.is_dir() else p.read_bytes()
    return out


def _one_line_error(msg: str, field: str, *needles: str) -> None:
    """``msg`` is one line that starts with ``field:`` and names every needle."""
    assert "\n" not in msg and "Traceback" not in msg, msg
    assert msg.startswith(f"{field}:"), msg
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"


def _strict_json(text: str):
    def bad(token):
        raise AssertionError(f"non-standard JSON constant {token}")
    return json.loads(text, parse_constant=bad)


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _hidden_files(root: Path) -> list[str]:
    """Temp files and other dot-files anywhere under ``root``."""
    return [str(p.relative_to(root)) for p in root.rglob(".*")]


def _leaf_dirs(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_dir() and not any(c.is_dir() for c in p.iterdir())}


def _event_content(run_dir: Path) -> dict:
    """Tags and, per tag, the (step, value) sequence of one TensorBoard run directory."""
    from tensorboard.backend.event_processing import event_accumulator as ea
    acc = ea.EventAccumulator(str(run_dir), size_guidance=ea.STORE_EVERYTHING_SIZE_GUIDANCE)
    acc.Reload()
    tags = acc.Tags()
    out: dict = {"tags": {k: sorted(v) if isinstance(v, list) else v for k, v in tags.items()}}
    for t in tags["scalars"]:
        out["scalar", t] = [(e.step, e.value) for e in acc.Scalars(t)]
    for t in tags["histograms"]:
        out["histogram", t] = [(e.step, e.histogram_value) for e in acc.Histograms(t)]
    for t in tags["tensors"]:
        out["tensor", t] = [(e.step, e.tensor_proto.SerializeToString()) for e in acc.Tensors(t)]
    return out


def _steps(content: dict) -> dict:
    return {k: [s for s, _ in v] for k, v in content.items() if k != "tags"}


def _without_timing(text: str) -> str:
    """summary.json's text with its top-level ``timing`` block cut out."""
    cut, n = re.subn(r'\n  "timing": \{[^{}]*\},?', "", text)
    assert n == 1, "summary.json has no single top-level timing block"
    return cut


def _summary_sans_timing(path: Path) -> str:
    d = _strict_json(path.read_text())
    del d["timing"]
    return json.dumps(d, sort_keys=True)


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Environment of every vgjax process here: CPU, one persistent compilation cache."""
    cache = tmp_path_factory.mktemp("jax-cache")
    e = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    e["XLA_FLAGS"] = optimization_flags()  # no device count: CLI_DEVICES in every process
    return e


@pytest.fixture(scope="module")
def ref(tmp_path_factory, env):
    """The uninterrupted reference sweep, run by the CLI in a fresh process.

    Runs in an empty working directory, into ``parent/out`` with ``parent`` empty, so tests
    can check that nothing was written anywhere else.
    """
    base = tmp_path_factory.mktemp("ref")
    cwd, parent = base / "cwd", base / "parent"
    cwd.mkdir()
    parent.mkdir()
    out = parent / "out"
    proc = _run(REF_ARGS + ["--out", str(out)], env=env, cwd=cwd)
    _check_ok(proc)
    return SimpleNamespace(out=out, proc=proc, cwd_after=sorted(os.listdir(cwd)),
                           parent_after=sorted(os.listdir(parent)),
                           result=history.load_result(out),
                           summary=_strict_json((out / outdir.SUMMARY_NAME).read_text()))


@pytest.fixture(scope="module")
def sane(tmp_path_factory, env, ref):
    """The reference grid with lr 0.02 in the lr=5 slot, written with --overwrite over a copy
    of the reference directory (so it also shows that --overwrite replaces a sweep)."""
    base = tmp_path_factory.mktemp("sane")
    out = base / "out"
    shutil.copytree(ref.out, out)
    proc = _run(SANE_ARGS + ["--out", str(out), "--overwrite"], env=env, cwd=base)
    _check_ok(proc)
    return SimpleNamespace(out=out, proc=proc, result=history.load_result(out))


# ----------------------------------------------------------------------------- bad input

BASE = Config(epochs=2, hist_every=0)
GRID = Grid(seeds=(0,), depths=(1,), widths=(2,))
CLI_BASE = ["sweep", "--epochs", "2", "--hist-every", "0", "--no-tensorboard", "--depths", "1",
            "--widths", "2", "--seeds", "0"]
NAN, INF = float("nan"), float("inf")


def _sweep_case(cfg=None, grid=None, **kw):
    """A bad value given to the API: both run_sweep (to a directory) and sweep (in memory)."""
    def call(out):
        config, g = replace(BASE, **(cfg or {})), replace(GRID, **(grid or {}))
        with pytest.raises(ValueError) as in_memory:
            sweep(config, seeds=g.seeds, depths=g.depths, widths=g.widths, lrs=g.lrs, **kw)
        try:
            run_sweep(config, g, out, tensorboard=False, **kw)
        except ValueError as e:  # the in-memory sweep() says the same
            assert str(e) == str(in_memory.value)
            raise
    return call


# ``out`` is ROOT/new/out (see _bad_input_dir); these use what ROOT holds instead.
def _out_is_file(out):
    run_sweep(BASE, GRID, out.parent.parent / "a_file", tensorboard=False)


def _out_below_file(out):
    run_sweep(BASE, GRID, out.parent.parent / "a_file" / "sub", tensorboard=False)


def _out_foreign(out):
    run_sweep(BASE, GRID, out.parent.parent / "foreign", tensorboard=False, overwrite=True)


# id, API call (given a fresh output path), CLI argv (appended to CLI_BASE, or a whole
# command when it starts with a subcommand), the field the message names, what it must say.
BAD_INPUT = [
    ("depth-0", _sweep_case(grid=dict(depths=(0,))), ["--depths", "0"], "depths", ["0", "1..256"]),
    ("depth-negative", _sweep_case(grid=dict(depths=(-2,))), ["--depths", "-2"], "depths",
     ["-2", "allowed"]),
    ("width-0", _sweep_case(grid=dict(widths=(0,))), ["--widths", "0"], "widths", ["0", "1..1024"]),
    ("epochs-0", _sweep_case(cfg=dict(epochs=0)), ["--epochs", "0"], "epochs", ["0", "allowed"]),
    ("batch-0", _sweep_case(cfg=dict(batch_size=0)), ["--batch-size", "0"], "batch_size",
     ["0", "1..500"]),
    ("batch-over-train-set", _sweep_case(cfg=dict(batch_size=501)), ["--batch-size", "501"],
     "batch_size", ["501", "1..500"]),
    ("lr-0", _sweep_case(cfg=dict(lr=0.0)), ["--lr", "0"], "lr", ["0.0", "allowed", "(0.0, inf)"]),
    ("lr-negative", _sweep_case(cfg=dict(lr=-0.1)), ["--lr", "-0.1"], "lr", ["-0.1", "allowed"]),
    ("lr-nan", _sweep_case(cfg=dict(lr=NAN)), ["--lr", "nan"], "lr", ["nan", "finite"]),
    ("lr-inf", _sweep_case(cfg=dict(lr=INF)), ["--lr", "inf"], "lr", ["inf", "finite"]),
    ("lr-not-a-number", lambda out: parse_float_list("lrs", "abc"), ["--lrs", "abc"], "lrs",
     ["abc", "allowed"]),
    ("lrs-negative", _sweep_case(grid=dict(lrs=(0.01, -1.0))), ["--lrs", "0.01,-1"], "lrs",
     ["-1.0", "allowed"]),
    ("lrs-nan", _sweep_case(grid=dict(lrs=(NAN,))), ["--lrs", "nan"], "lrs", ["nan", "finite"]),
    ("momentum-1", _sweep_case(cfg=dict(momentum=1.0)), ["--momentum", "1"], "momentum",
     ["1.0", "[0.0, 1.0)"]),
    ("momentum-negative", _sweep_case(cfg=dict(momentum=-0.1)), ["--momentum", "-0.1"], "momentum",
     ["-0.1", "[0.0, 1.0)"]),
    ("activation-typo", _sweep_case(cfg=dict(activation="rleu")), ["--activation", "rleu"],
     "activation", ["'rleu'", "did you mean 'relu'?", "allowed: tanh, relu"]),
    ("activation-unknown", _sweep_case(cfg=dict(activation="swishy_thing")),
     ["--activation", "swishy_thing"], "activation", ["'swishy_thing'", "allowed: tanh"]),
    ("init-typo", _sweep_case(cfg=dict(init="he_unifrom")), ["--init", "he_unifrom"], "init",
     ["'he_unifrom'", "did you mean 'he_uniform'?", "allowed:"]),
    ("output-init-typo", _sweep_case(cfg=dict(output_init="glorot_unifrom")),
     ["--output-init", "glorot_unifrom"], "output_init",
     ["'glorot_unifrom'", "did you mean 'glorot_uniform'?", "allowed:"]),
    ("optimizer-typo", _sweep_case(cfg=dict(optimizer="adma")), ["--optimizer", "adma"],
     "optimizer", ["'adma'", "did you mean 'adam'?", "allowed: sgd, adam"]),
    ("experiment-typo", lambda out: ex.get("deep-rleu"),
     ["run", "deep-rleu", "--epochs", "2", "--seeds", "0"], "experiment",
     ["'deep-rleu'", "did you mean 'deep-relu'?", "allowed:"]),
    ("range-backwards", lambda out: parse_int_list("depths", "5-1"), ["--depths", "5-1"], "depths",
     ["'5-1'", "allowed"]),
    ("range-letters", lambda out: parse_int_list("depths", "a-b"), ["--depths", "a-b"], "depths",
     ["'a-b'", "allowed"]),
    ("range-double-dash", lambda out: parse_int_list("depths", "1--3"), ["--depths", "1--3"],
     "depths", ["'1--3'", "allowed"]),
    ("range-empty", lambda out: parse_int_list("widths", ""), ["--widths", ""], "widths",
     ["''", "allowed"]),
    ("depths-duplicate", _sweep_case(grid=dict(depths=(1, 1))), ["--depths", "1,1"], "depths",
     ["[1, 1]", "duplicates"]),
    ("seed-negative", _sweep_case(grid=dict(seeds=(-1,))), ["--seeds", "-1"], "seeds",
     ["-1", "allowed"]),
    ("seed-too-big", _sweep_case(grid=dict(seeds=(2**31,))), ["--seeds", "2147483648"], "seeds",
     ["2147483648", "0..2147483647"]),
    ("noise-negative", _sweep_case(cfg=dict(noise=-0.1)), ["--noise", "-0.1"], "noise",
     ["-0.1", "[0.0, inf)"]),
    ("hist-every-negative", _sweep_case(cfg=dict(hist_every=-1)), ["--hist-every", "-1"],
     "hist_every", ["-1", "allowed"]),
    ("chunk-size-0", _sweep_case(chunk_size=0), ["--chunk-size", "0"], "chunk_size",
     ["0", "integers >= 1"]),
    ("out-is-a-file", _out_is_file, ["--out", "{dir}/a_file"], "out",
     ["a_file", "is a file", "allowed: a directory path"]),
    ("out-below-a-file", _out_below_file, ["--out", "{dir}/a_file/sub"], "out",
     ["a_file", "is a file", "allowed: a directory path"]),
    ("out-holds-foreign-files", _out_foreign, ["--out", "{dir}/foreign", "--overwrite"], "out",
     ["foreign", "not empty", "allowed:"]),
]


def _bad_input_dir(tmp_path: Path) -> tuple[Path, Path]:
    """tmp_path with a file, a directory of someone else's files and a fresh output path."""
    (tmp_path / "a_file").write_text("not a directory\n")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine\n")
    return tmp_path, tmp_path / "new" / "out"


@pytest.mark.parametrize("case", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_api(case, tmp_path):
    _, call, _, field, needles = case
    root, out = _bad_input_dir(tmp_path)
    before = _tree(root)
    with pytest.raises(ValueError) as err:
        call(out)
    _one_line_error(str(err.value), field, *needles)
    assert _tree(root) == before, "a bad input created, changed or left files behind"


@pytest.mark.parametrize("case", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_cli(case, tmp_path, capsys):
    _, _, argv, field, needles = case
    root, out = _bad_input_dir(tmp_path)
    argv = [a.replace("{dir}", str(root)) for a in argv]
    if argv[0] in ("run", "sweep", "reproduce"):
        argv = argv + ["--out", str(out)]
    else:
        argv = CLI_BASE + ["--out", str(out)] + argv  # a later --out wins
    before = _tree(root)
    try:
        rc = cli.main(argv)
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.out == ""
    assert captured.err.startswith("vgjax: error: ") and captured.err.count("\n") == 1, captured.err
    _one_line_error(captured.err[len("vgjax: error: "):-1], field, *needles)
    assert _tree(root) == before, "a bad input created, changed or left files behind"


def test_argparse_errors_are_one_line(capsys):
    for argv in (["sweep", "--lr", "abc", "--out", "x"], ["sweep"], ["swep"],
                 ["sweep", "--epochs", "1.5", "--out", "x"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        captured = capsys.readouterr()
        assert e.value.code == 2
        assert captured.err.startswith("vgjax: error: ") and captured.err.count("\n") == 1, argv
        assert "usage:" not in captured.err and "Traceback" not in captured.err


@pytest.mark.parametrize("argv, field, needle", [
    (["sweep", "--depths", "0"], "depths", "0 is out of range"),
    (["sweep", "--activation", "rleu"], "activation", "did you mean 'relu'?"),
    (["sweep", "--lr", "nan"], "lr", "nan"),
    (["sweep", "--seeds", "5-1"], "seeds", "'5-1'"),
    (["run", "deep-rleu"], "experiment", "did you mean 'deep-relu'?"),
    (["sweep", "--lr", "abc"], "argument --lr", "'abc'"),
], ids=["depth-0", "activation-typo", "lr-nan", "range-backwards", "experiment-typo",
        "lr-not-a-number"])
def test_bad_input_real_process(argv, field, needle, tmp_path, env):
    """The console script itself: exit 2, exactly one stderr line, nothing on stdout."""
    out = tmp_path / "out"
    proc = _run(argv + ["--out", str(out)], env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.startswith("vgjax: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    _one_line_error(proc.stderr[len("vgjax: error: "):-1], field, needle)
    assert sorted(os.listdir(tmp_path)) == []


def test_bad_out_on_a_terminal_is_one_line(tmp_path, env):
    """With stderr on a terminal (progress bar enabled) a refused --out is still one line."""
    (tmp_path / "a_file").write_text("x")
    try:
        master, slave = os.openpty()
    except OSError:
        pytest.skip("no pseudo-terminals here")
    # a 24 x 100 terminal: with 0 columns tqdm would draw an empty bar
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = subprocess.Popen(VGJAX + ["sweep", "--epochs", "2", "--out",
                                         str(tmp_path / "a_file")],
                                env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=slave)
    finally:
        os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=120) == 2
    text = b"".join(chunks).decode().replace("\r\n", "\n")
    assert text.count("\n") == 1 and text.startswith("vgjax: error: out: "), repr(text)
    assert proc.stdout.read() == b""
    proc.stdout.close()


def _deny_writes_in(monkeypatch, denied: Path):
    """Simulate a directory without write permission (we may run as root, where chmod does
    not stop us): creating any file directly in ``denied`` fails with EACCES."""
    real_open = os.open

    def fake_open(path, flags, *args, **kwargs):
        if Path(path).parent == denied and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)
    monkeypatch.setattr(os, "open", fake_open)


@pytest.mark.parametrize("target", ["denied", "denied/new/out"])
def test_out_without_write_permission(target, tmp_path, monkeypatch, capsys):
    denied = tmp_path / "denied"
    denied.mkdir()
    out = tmp_path / target
    _deny_writes_in(monkeypatch, denied)
    with pytest.raises(ValueError) as err:
        run_sweep(BASE, GRID, out, tensorboard=False)
    _one_line_error(str(err.value), "out", str(out), "not writable", "Permission denied",
                    "allowed: a directory you can write to")
    assert cli.main(CLI_BASE + ["--out", str(out)]) == 2
    err_text = capsys.readouterr().err
    assert err_text == f"vgjax: error: {err.value}\n"
    assert list(denied.iterdir()) == []


def test_out_in_read_only_system_dir_real_process(tmp_path, env):
    """A location even root cannot write to (/sys is read-only sysfs), through the real CLI."""
    target = Path("/sys/vgjax_out")
    if not Path("/sys").is_dir() or target.exists():
        pytest.skip("no /sys here")
    try:
        fd = os.open("/sys/.vgjax-write-test", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        pass
    else:
        os.close(fd)
        os.unlink("/sys/.vgjax-write-test")
        pytest.skip("/sys is writable here")
    proc = _run(CLI_BASE + ["--out", str(target)], env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    _one_line_error(proc.stderr[len("vgjax: error: "):-1], "out", "/sys/vgjax_out", "not writable",
                    "allowed:")
    assert not target.exists()


# ----------------------------------------------------------------- bad results files


def _tiny_result() -> SweepResult:
    """A 2-run result (no training needed): 3 epochs, depth 1, width 2, no histograms."""
    config = Config(epochs=3, hist_every=0)
    r, e, layers = 2, 3, 2
    curves = np.linspace(0.1, 0.9, r * e, dtype=np.float32).reshape(r, e)
    stats = np.linspace(1, 2, r * e * layers, dtype=np.float32).reshape(r, e, layers)
    history = {c: curves for c in CURVES} | {s: stats for s in LAYER_STATS}
    runs = RunTable(seed=np.array([0, 1], np.int64), depth=np.array([1, 1], np.int32),
                    width=np.array([2, 2], np.int32), lr=np.full(2, 0.01, np.float32),
                    diverged_epoch=np.full(2, -1, np.int32))
    return SweepResult(config=config, seeds=(0, 1), depths=(1,), widths=(2,), lrs=(),
                       runs=runs, history=history)


def _write_tiny(out: Path) -> None:
    out.mkdir(parents=True)
    result = _tiny_result()
    summary.write_summary(out / outdir.SUMMARY_NAME, result, timing={})
    history.write_history(out / outdir.HISTORY_NAME, result)


class _Payload:
    """Unpickling this creates a directory: proof that pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _damage(kind: str, out: Path, marker: Path) -> tuple[str, list[str]]:
    """Damage the tiny result in ``out``; return (file named in the message, needles)."""
    sp, hp = out / outdir.SUMMARY_NAME, out / outdir.HISTORY_NAME
    if kind == "summary-truncated":
        sp.write_bytes(sp.read_bytes()[: sp.stat().st_size // 2])
        return str(sp), ["not valid JSON", "truncated"]
    if kind == "summary-garbage":
        sp.write_bytes(b"\x00\xff\xfe garbage \x80")
        return str(sp), ["not UTF-8"]
    if kind == "summary-not-an-object":
        sp.write_text("[1, 2, 3]\n")
        return str(sp), ["not a JSON object"]
    if kind == "summary-nan-token":
        sp.write_text(sp.read_text().replace('"version": 1', '"version": NaN'))
        return str(sp), ["not valid JSON"]
    if kind == "summary-other-format":
        d = json.loads(sp.read_text())
        d["format"] = "keras.history"
        sp.write_text(json.dumps(d))
        return str(sp), ["'keras.history'", "expected 'vgjax.sweep'"]
    if kind == "summary-future-version":
        d = json.loads(sp.read_text())
        d["version"] = 99
        sp.write_text(json.dumps(d))
        return str(sp), ["version 99", "reads version 1"]
    if kind == "summary-bad-config":
        d = json.loads(sp.read_text())
        d["config"]["activation"] = "rleu"
        sp.write_text(json.dumps(d))
        return str(sp), ["invalid config", "rleu"]
    if kind == "summary-missing":
        sp.unlink()
        return str(sp), ["is missing"]
    if kind == "history-truncated":
        hp.write_bytes(hp.read_bytes()[: hp.stat().st_size // 2])
        return str(hp), ["not a readable npz", "truncated or corrupt"]
    if kind == "history-corrupt":
        # flip bytes in the middle of one member's compressed data (bad CRC or bad deflate)
        with zipfile.ZipFile(hp) as zf:
            info = zf.getinfo("train_loss.npy")
        data = bytearray(hp.read_bytes())
        at = info.header_offset
        fn_len, extra_len = struct.unpack("<HH", data[at + 26:at + 30])  # local file header
        mid = at + 30 + fn_len + extra_len + info.compress_size // 2
        data[mid:mid + 4] = bytes(b ^ 0xFF for b in data[mid:mid + 4])
        hp.write_bytes(bytes(data))
        return str(hp), ["not a readable npz", "truncated or corrupt"]
    if kind == "history-not-zip":
        hp.write_text("hello")
        return str(hp), ["not a readable npz"]
    if kind == "history-wrong-shape":
        arrays = _npz(hp)
        arrays["train_loss"] = arrays["train_loss"][:, :2]
        np.savez(hp.with_suffix(".tmp.npz"), **arrays)
        os.replace(hp.with_suffix(".tmp.npz"), hp)
        return str(hp), ["train_loss", "shape (2, 2)", "expected (2, 3)"]
    if kind == "history-other-sweep":
        arrays = _npz(hp)
        arrays["run_seed"] = np.array([5, 6], np.int64)
        np.savez(hp.with_suffix(".tmp.npz"), **arrays)
        os.replace(hp.with_suffix(".tmp.npz"), hp)
        return str(sp), ["does not match the run table", "different sweeps"]
    if kind == "history-pickle":
        arrays = _npz(hp)
        arrays["extra"] = np.array([_Payload(marker)], dtype=object)
        with open(hp, "wb") as f:
            np.savez(f, **arrays)  # np.save pickles object arrays
        return str(hp), ["'extra'", "dtype object", "pickle", "allowed:"]
    raise AssertionError(kind)


BAD_RESULTS = ["summary-truncated", "summary-garbage", "summary-not-an-object",
               "summary-nan-token", "summary-other-format", "summary-future-version",
               "summary-bad-config", "summary-missing", "history-truncated", "history-corrupt",
               "history-not-zip", "history-wrong-shape", "history-other-sweep", "history-pickle"]


@pytest.mark.parametrize("kind", BAD_RESULTS)
def test_bad_results_files(kind, tmp_path, capsys):
    out, marker = tmp_path / "out", tmp_path / "pickle-ran"
    _write_tiny(out)
    history.load_result(out)  # intact, it loads
    named, needles = _damage(kind, out, marker)
    before = _tree(tmp_path)
    with pytest.raises(ValueError) as err:
        history.load_result(out)
    _one_line_error(str(err.value), "results", repr(named), *needles)
    assert cli.main(["show", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"vgjax: error: {err.value}\n"
    assert _tree(tmp_path) == before, "reading a bad result changed files"
    assert not marker.exists(), "an object array was unpickled"


@pytest.mark.parametrize("kind", ["summary-truncated", "history-corrupt", "summary-future-version"])
def test_bad_results_files_real_process(kind, tmp_path, env):
    out = tmp_path / "out"
    _write_tiny(out)
    named, needles = _damage(kind, out, tmp_path / "pickle-ran")
    proc = _run(["show", str(out)], env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    _one_line_error(proc.stderr[len("vgjax: error: "):-1], "results", repr(named), *needles)


# ------------------------------------------------------------------------- divergence


@pytest.mark.devices
def test_divergence_is_flagged_in_table_summary_and_cli(ref, capsys):
    res, summary = ref.result, ref.summary
    runs = res.runs
    big, small = runs.lr == LR_BIG, runs.lr == LR_SANE
    n_div = int(runs.diverged.sum())
    assert runs.diverged[big].sum() >= 3, "lr=5 should make several depth-10 ReLU runs diverge"
    assert not runs.diverged[small].any()
    assert np.all(runs.diverged_epoch[runs.diverged] >= 1)
    assert np.all(runs.diverged_epoch[~runs.diverged] == -1)
    # summary: per run and per group
    for i, row in enumerate(summary["runs"]):
        assert row["diverged"] is bool(runs.diverged[i])
        assert row["diverged_epoch"] == (int(runs.diverged_epoch[i]) if runs.diverged[i] else None)
        if row["diverged_epoch"] == 1:  # no epoch before it: no final values
            assert all(row["final_" + c] is None for c in CURVES), row
    groups = {g["lr"]: g for g in summary["groups"]}
    assert groups[5.0]["n_diverged"] == int(runs.diverged[big].sum())
    assert groups[0.01]["n_diverged"] == 0
    # the CLI says how many diverged, when sweeping and when showing
    assert f"{n_div} of {N_RUNS} runs diverged" in ref.proc.stdout
    assert cli.main(["show", str(ref.out)]) == 0
    assert f"{N_RUNS} runs, {EPOCHS} epochs, {n_div} diverged" in capsys.readouterr().out


@pytest.mark.devices
def test_diverged_statistics_are_masked(ref):
    res = ref.result
    h = res.history
    hist_epochs = h["hist_epochs"]
    for r in np.flatnonzero(res.runs.diverged):
        d = int(res.runs.diverged_epoch[r])  # 1-based: index d-1 is the first bad epoch
        for name in CURVES + LAYER_STATS:
            assert np.all(np.isnan(h[name][r, d - 1:])), (name, r)
        for name in CURVES:  # before it, the run's curves are real numbers
            assert np.all(np.isfinite(h[name][r, : d - 1])), (name, r)
        late = hist_epochs >= d
        for name in ("grad_hist", "weight_hist"):
            assert np.all(h[name][r, late] == 0), (name, r)
        for name in ("grad_hist_stats", "weight_hist_stats"):
            assert np.all(np.isnan(h[name][r, late])), (name, r)
    for r in np.flatnonzero(~res.runs.diverged):  # survivors: finite curves throughout
        for name in CURVES:
            assert np.all(np.isfinite(h[name][r])), (name, r)


@pytest.mark.devices
def test_divergence_leaves_the_other_runs_bit_identical(ref, sane):
    """The lr=0.01 runs of the lrs=(0.01, 5) grid equal, bit for bit, those of the
    lrs=(0.01, 0.02) grid, though each shared its compiled chunk with an lr=5 run."""
    a, b = ref.result, sane.result
    assert not b.runs.diverged.any()
    ia, ib = np.flatnonzero(a.runs.lr == LR_SANE), np.flatnonzero(b.runs.lr == LR_SANE)
    assert len(ia) == len(ib) == N_SEEDS
    np.testing.assert_array_equal(a.runs.seed[ia], b.runs.seed[ib])
    n = 0
    for name, arr in a.history.items():
        if name in ("hist_epochs", "hist_edges"):
            np.testing.assert_array_equal(arr, b.history[name])
            continue
        np.testing.assert_array_equal(arr[ia], b.history[name][ib], err_msg=name)
        n += 1
    assert n >= len(CURVES) + len(LAYER_STATS) + len(HIST_ARRAYS)


@pytest.mark.devices
def test_plots_skip_the_diverged_part(ref, tmp_path):
    res = ref.result
    big = np.flatnonzero(res.runs.lr == LR_BIG)
    dead = np.flatnonzero(res.runs.diverged)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice" and the like
        paths = [
            figures.plot_learning_curves(res, tmp_path / "curves.png"),
            figures.plot_learning_curves(res, tmp_path / "curves_dead.png", runs=dead),
            figures.plot_layer_gradients({"lr 5": (res, big), "all": res}, tmp_path / "grads.png"),
            figures.plot_weight_norms({"lr 5": (res, big)}, tmp_path / "weights.png"),
            figures.plot_gradient_profile({"diverged": (res, dead)}, tmp_path / "profile.png",
                                        epochs=(1, 50, 100)),
            figures.plot_depth_study(res, tmp_path / "depth.png"),
            figures.plot_width_depth_heatmap(res, tmp_path / "heat.png"),
        ]
    for p in paths:
        assert p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    final = final_metric(res, "test_accuracy")
    d1 = res.runs.diverged_epoch == 1
    assert np.all(np.isnan(final[d1])) and np.all(np.isfinite(final[~res.runs.diverged]))


@pytest.mark.devices
def test_tensorboard_has_nothing_after_divergence(ref, tmp_path):
    res = ref.result
    names = tb.run_dir_names(res, store.sanitize_name("../../evil"))
    logdir = ref.out / outdir.TENSORBOARD_DIR
    checked = 0
    for r in np.flatnonzero(res.runs.lr == LR_BIG):
        content = _event_content(logdir / names[r])
        d = int(res.runs.diverged_epoch[r])
        last = EPOCHS if d < 0 else d - 1  # the last epoch with real values
        for key, steps in _steps(content).items():
            if key[1].startswith("hparams/"):
                continue
            assert all(s <= last for s in steps), (names[r], key, d)
            if d < 0 and key[0] == "scalar":
                assert steps == list(range(1, EPOCHS + 1)), (names[r], key)
        if d >= 0:
            checked += 1
            epoch_tags = [k for k in content if k != "tags" and k[1].startswith("epoch/")]
            assert all(not content[k] for k in epoch_tags)
    assert checked >= 3
    # the lr=5 seed mean still has every epoch (from the seeds that survived), all finite
    mean = _event_content(logdir / (names[int(np.flatnonzero(res.runs.lr == LR_BIG)[0])]
                                    .split("/")[0] + "/mean"))
    loss = mean["scalar", "epoch/test_loss"]
    if (~res.runs.diverged[res.runs.lr == LR_BIG]).any():
        assert [s for s, _ in loss] == list(range(1, EPOCHS + 1))
    assert all(np.isfinite(v) for _, v in loss)
    # and rewriting the TensorBoard logs from the loaded result works the same way
    written = tb.write_sweep(res, tmp_path / "tb", "again")
    assert len(written) == N_RUNS + 2


# ------------------------------------------------------------- interruption and resume


_CHUNK_RE = re.compile(r"chunk_(\d+)\.npz")


def _chunk_files(chunks: Path) -> list[Path]:
    return sorted(p for p in chunks.iterdir() if _CHUNK_RE.fullmatch(p.name)) \
        if chunks.is_dir() else []


def _kill_when(out: Path, ready, tmp_path: Path, env) -> None:
    """Start the reference command into ``out`` and SIGKILL it once ``ready()`` is true."""
    log_path = tmp_path / "killed.log"
    with open(log_path, "a") as log:  # a file, not a pipe nobody reads while we poll
        proc = subprocess.Popen(VGJAX + REF_ARGS + ["--out", str(out)], env=env, cwd=tmp_path,
                                stdout=log, stderr=log)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None and not ready():
            time.sleep(0.01)
        still_running = proc.poll() is None
        if still_running:
            os.kill(proc.pid, signal.SIGKILL)
        rc = proc.wait(timeout=60)
    assert still_running and rc == -signal.SIGKILL, (
        f"the sweep ended (rc {rc}) before it could be killed: {log_path.read_text()[-2000:]}")


@pytest.mark.devices
@pytest.mark.slow
def test_killed_sweep_resumes_to_the_same_files(ref, tmp_path, env):
    out = tmp_path / "out"
    chunks = out / outdir.CHUNKS_DIR

    # Kill 1: as soon as the first chunk file exists (its TensorBoard logs are usually not
    # done yet). Kill 2, in the rerun: once a further chunk has its TensorBoard logs marked
    # done. Then a third run finishes the sweep.
    _kill_when(out, lambda: bool(_chunk_files(chunks)), tmp_path, env)
    first = _chunk_files(chunks)
    assert 1 <= len(first) < N_CHUNKS

    def later_chunk_done():
        return any(p.with_name(p.name + ".tb-done").exists() for p in _chunk_files(chunks)
                   if p not in first)
    _kill_when(out, later_chunk_done, tmp_path, env)
    kept = _chunk_files(chunks)
    assert set(first) < set(kept) and len(kept) < N_CHUNKS, (first, kept)

    # What a kill leaves: whole files only (a killed writer's temp files may remain).
    stamps = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in kept}
    for p in kept:
        first_run = CHUNK * int(_CHUNK_RE.fullmatch(p.name).group(1))
        assert _npz(p)["train_loss"].shape == (min(CHUNK, N_RUNS - first_run), EPOCHS)
    assert not (out / outdir.SUMMARY_NAME).exists() and not (out / outdir.HISTORY_NAME).exists()
    _strict_json((out / outdir.MANIFEST_NAME).read_text())

    # The same command again finishes the sweep, reusing the chunks it finds.
    _check_ok(_run(REF_ARGS + ["--out", str(out)], env=env, cwd=tmp_path))
    for name, stamp in stamps.items():
        p = chunks / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stamp, f"{name} was recomputed"
    assert len(_chunk_files(chunks)) == N_CHUNKS
    assert _hidden_files(out) == [], "temp files were left behind"

    # summary.json (but for timing) and history.npz equal the uninterrupted run's
    sa, sb = out / outdir.SUMMARY_NAME, ref.out / outdir.SUMMARY_NAME
    assert _summary_sans_timing(sa) == _summary_sans_timing(sb)
    assert _without_timing(sa.read_text()) == _without_timing(sb.read_text())
    a, b = _npz(out / outdir.HISTORY_NAME), _npz(ref.out / outdir.HISTORY_NAME)
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert (out / outdir.HISTORY_NAME).read_bytes() == (ref.out / outdir.HISTORY_NAME).read_bytes()

    # TensorBoard: the same run directories, one event file each, the same tags and steps
    la, lb = out / outdir.TENSORBOARD_DIR, ref.out / outdir.TENSORBOARD_DIR
    assert _leaf_dirs(la) == _leaf_dirs(lb)
    assert len(_leaf_dirs(la)) == N_RUNS + 2  # the runs + 2 seed means
    for root in (la, lb):
        per_dir = Counter(str(p.parent.relative_to(root)) for p in root.rglob("*")
                          if p.is_file())
        assert set(per_dir) == _leaf_dirs(root) and set(per_dir.values()) == {1}, per_dir
        assert all("tfevents" in p.name for p in root.rglob("*") if p.is_file())
    names = tb.run_dir_names(ref.result, store.sanitize_name("../../evil"))
    first_big = int(np.flatnonzero(ref.result.runs.lr == LR_BIG)[0])
    for rel in [names[0], names[first_big], names[-2], names[0].split("/")[0] + "/mean"]:
        ca, cb = _event_content(la / rel), _event_content(lb / rel)
        assert ca["tags"] == cb["tags"], rel
        assert ca == cb, rel
        for key, steps in _steps(ca).items():
            assert len(steps) == len(set(steps)), (rel, key, "duplicate steps")
        if rel == names[0]:
            assert ca["scalar", "epoch/train_loss"][-1][0] == EPOCHS


@pytest.mark.devices
@pytest.mark.parametrize("change", [["--epochs", "50"], ["--lrs", "0.01,0.02"]],
                         ids=["other-config", "other-grid"])
def test_different_sweep_in_existing_dir_is_refused(change, ref, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(ref.out, out)
    before = _tree(out)
    argv = REF_ARGS[:] + ["--out", str(out)]
    i = argv.index(change[0])
    argv[i + 1] = change[1]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    msg = captured.err[len("vgjax: error: "):-1]
    field = "epochs" if change[0] == "--epochs" else "lrs"
    _one_line_error(msg, "out", repr(str(out)), "different", field, "--overwrite")
    assert _tree(out) == before


@pytest.mark.devices
def test_overwrite_replaces_a_different_sweep(sane):
    out = sane.out
    manifest = _strict_json((out / outdir.MANIFEST_NAME).read_text())
    assert manifest["grid"]["lrs"] == [0.01, 0.02]
    summary = _strict_json((out / outdir.SUMMARY_NAME).read_text())
    assert summary["grid"]["lrs"] == [0.01, 0.02] and summary["n_runs"] == N_RUNS
    assert "diverged" not in sane.proc.stdout
    tb_configs = sorted(os.listdir(out / outdir.TENSORBOARD_DIR))
    assert len(tb_configs) == 2 and not any(c.endswith("_lr5") for c in tb_configs), tb_configs
    chunk_files = sorted(p.name for p in (out / outdir.CHUNKS_DIR).iterdir() if p.suffix == ".npz")
    assert len(chunk_files) == N_CHUNKS
    assert _hidden_files(out) == []


# -------------------------------------------------------------------------- determinism


@pytest.mark.devices
def test_same_command_twice_gives_identical_files(ref, tmp_path, env):
    out = tmp_path / "out"
    _check_ok(_run(REF_ARGS + ["--out", str(out)], env=env, cwd=tmp_path))
    sa, sb = ref.out / outdir.SUMMARY_NAME, out / outdir.SUMMARY_NAME
    assert _summary_sans_timing(sa) == _summary_sans_timing(sb)
    # and the raw bytes outside the timing block
    assert _without_timing(sa.read_bytes().decode()) == _without_timing(sb.read_bytes().decode())
    a, b = _npz(ref.out / outdir.HISTORY_NAME), _npz(out / outdir.HISTORY_NAME)
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert (ref.out / outdir.HISTORY_NAME).read_bytes() == (out / outdir.HISTORY_NAME).read_bytes()


@pytest.mark.devices
def test_cli_process_uses_the_expected_devices(ref):
    """The CLI made one CPU device per core (or JAX_NUM_CPU_DEVICES) and chunked by it."""
    assert ref.summary["versions"]["device"].endswith(f" x{CLI_DEVICES}"), ref.summary["versions"]
    layout = _strict_json((ref.out / outdir.CHUNKS_DIR / "layout.json").read_text())
    assert layout["chunk_size"] == CHUNK
    assert len(_chunk_files(ref.out / outdir.CHUNKS_DIR)) == N_CHUNKS >= 4


@pytest.mark.devices
def test_summary_records_versions_and_device(ref):
    import importlib.metadata as md
    versions = ref.summary["versions"]
    for pkg in ("jax", "jaxlib", "flax", "optax"):
        assert versions.get(pkg) == md.version(pkg), pkg
    assert isinstance(versions.get("device"), str) and versions["device"].startswith("cpu:")
    timing = ref.summary["timing"]
    assert timing and all(isinstance(v, float) for v in timing.values())


# ------------------------------------------------------------------------------- safety


@pytest.mark.devices
def test_results_are_json_and_plain_npz(ref):
    _strict_json((ref.out / outdir.SUMMARY_NAME).read_text())
    _strict_json((ref.out / outdir.MANIFEST_NAME).read_text())
    for path in [ref.out / outdir.HISTORY_NAME, *sorted((ref.out / outdir.CHUNKS_DIR).glob("*.npz"))]:
        for name, arr in _npz(path).items():  # allow_pickle=False throughout
            assert arr.dtype.kind in "biuf", (path.name, name, arr.dtype)


def test_library_never_loads_with_pickle():
    """Every np.load in the package passes allow_pickle=False; nothing imports pickle."""
    src = ROOT / "vgjax"
    for path in sorted(src.glob("*.py")):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(c?pickle|dill|joblib)\b", text, re.M), path.name
        for m in re.finditer(r"\b(?:np|numpy)\.load\(", text):
            depth, end = 1, m.end()
            while depth and end < len(text):
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                end += 1
            call = text[m.end():end]
            assert "allow_pickle=False" in call, f"{path.name}: np.load({call}"


@pytest.mark.devices
def test_names_are_sanitised_and_nothing_is_written_outside_out(ref):
    # the run wrote only OUT in its parent directory and nothing in its working directory
    assert ref.parent_after == ["out"]
    assert ref.cwd_after == []
    out = ref.out.resolve()
    logdir = out / outdir.TENSORBOARD_DIR
    for p in out.rglob("*"):
        assert p.resolve().is_relative_to(out)
        assert not p.is_symlink()
    configs = sorted(os.listdir(logdir))
    assert len(configs) == 2
    for c in configs:
        assert "/" not in c and ".." not in c and not c.startswith(".") and "evil" in c
    # the helpers behind it
    for bad in ("../../evil", "..", ".", "/etc/passwd", "a/../../b", "", "x" * 300):
        s = store.sanitize_name(bad)
        assert s and "/" not in s and not s.startswith(".") and len(s) <= 209
        assert store.safe_join(ref.out, s).resolve().parent == ref.out.resolve()
    with pytest.raises(ValueError, match="outside"):
        store.safe_join(ref.out, "..", "evil")
