"""One sweep spread over processes: array-job shards, multi-process JAX, Ray.

The oracle everywhere is the same sweep run by one ``vgjax sweep`` process with the same
total device count: summary.json outside ``timing`` and every history.npz array must be
identical, and the TensorBoard tree the same. Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import optimization_flags
from vgjax.run import distributed as dist
from vgjax.io import outdir
from vgjax.config import Config, Grid

ARGS = ["--activation", "relu", "--init", "he_uniform", "--depths", "1-3", "--seeds", "0-3",
        "--epochs", "4", "--hist-every", "2"]
N_RUNS = 12
TIMEOUT = 300


def _env(devices: int) -> dict:
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={devices} "
                        f"--xla_cpu_experimental_ynn_fusion_type= {optimization_flags()}")
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    env.pop("JAX_NUM_CPU_DEVICES", None)  # (CI may set it for the suite): the count above
    return env


def _vgjax(*argv: str) -> list[str]:
    return [sys.executable, "-m", "vgjax.cli", *argv]


def _run(argv: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=TIMEOUT)


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _summary(out: Path) -> dict:
    s = json.loads((out / outdir.SUMMARY_NAME).read_text())
    s.pop("timing")
    return s


def _tb_tree(out: Path) -> dict[str, int]:
    root = out / outdir.TENSORBOARD_DIR
    tree: dict[str, int] = {}
    for p in root.rglob("*"):
        if p.is_file():
            key = str(p.parent.relative_to(root))
            tree[key] = tree.get(key, 0) + 1
    return tree


def assert_same_sweep(a: Path, b: Path, *, tensorboard: bool = True) -> None:
    """summary.json (outside timing), history.npz arrays and TensorBoard dirs are equal."""
    assert _summary(a) == _summary(b)
    with np.load(a / outdir.HISTORY_NAME) as x, np.load(b / outdir.HISTORY_NAME) as y:
        assert sorted(x.files) == sorted(y.files)
        for k in x.files:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)
    if tensorboard:
        ta, tb_ = _tb_tree(a), _tb_tree(b)
        assert ta == tb_ and set(ta.values()) == {1}
        assert len(ta) == N_RUNS + 3  # every run + one seed-mean dir per depth


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The single-process sweep, 1 device, chunks of 2 runs."""
    d = tmp_path_factory.mktemp("ref")
    _ok(_run(_vgjax("sweep", *ARGS, "--chunk-size", "2", "--out", str(d / "out")), _env(1), d))
    return d / "out"


# ---------------------------------------------------------------------------- array jobs


@pytest.mark.slow
def test_concurrent_shards_then_merge_equal_one_sweep(reference, tmp_path, capsys):
    out = tmp_path / "out"
    cmd = _vgjax("sweep", *ARGS, "--chunk-size", "2", "--out", str(out))
    # Shards 0 and 1 start at the same moment (racing for the claim); shard 2 not yet.
    procs = [subprocess.Popen(cmd + ["--shard", f"{i}/3"], env=_env(1), cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in (0, 1)]
    for p in procs:
        stdout, stderr = p.communicate(timeout=TIMEOUT)
        assert p.returncode == 0, stderr[-3000:]
    chunks = sorted(p.name for p in (out / outdir.CHUNKS_DIR).glob("chunk_*.npz"))
    assert chunks == [f"chunk_{c:05d}.npz" for c in (0, 1, 3, 4)]

    # Merging now names the missing chunks and the shard that owes them, writes nothing
    # (in this process: merging needs no devices, and it saves a JAX start-up).
    from vgjax import cli
    for argv in (["merge", str(out)], ["sweep", *ARGS, "--chunk-size", "2", "--out", str(out)]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert "chunks: 2, 5 of 0-5 are missing" in err and "2/3" in err, err
        assert not (out / outdir.SUMMARY_NAME).exists() and not (out / outdir.HISTORY_NAME).exists()

    _ok(_run(cmd + ["--shard", "2/3"], _env(1), tmp_path))
    # a finished shard run again (here, on this process's devices) computes nothing
    stamp = {p.name: p.stat().st_mtime_ns for p in (out / outdir.CHUNKS_DIR).glob("chunk_*.npz")}
    assert cli.main(cmd[3:] + ["--shard", "0/3"]) == 0
    assert stamp == {p.name: p.stat().st_mtime_ns
                     for p in (out / outdir.CHUNKS_DIR).glob("chunk_*.npz")}
    assert cli.main(["merge", str(out)]) == 0
    assert_same_sweep(out, reference)
    assert not [p for p in out.rglob(".*")], "temp files were left behind"


@pytest.mark.slow
def test_shards_on_machines_with_other_device_counts_cut_the_same_chunks(tmp_path):
    """The chunk size is fixed by the manifest: a 3-device shard joins a 2-device one."""
    out = tmp_path / "out"
    cmd = _vgjax("sweep", *ARGS, "--out", str(out))
    _ok(_run(cmd + ["--shard", "0/2"], _env(2), tmp_path))
    layout = json.loads((out / outdir.MANIFEST_NAME).read_text())[dist.LAYOUT_KEY]
    assert layout["shards"] == 2 and layout["chunk_size"] % 2 == 0
    _ok(_run(cmd + ["--shard", "1/2"], _env(3), tmp_path))
    n_chunks = -(-N_RUNS // layout["chunk_size"])
    assert len(list((out / outdir.CHUNKS_DIR).glob("chunk_*.npz"))) == n_chunks
    _ok(_run(cmd, _env(1), tmp_path))  # the plain command merges
    with np.load(out / outdir.HISTORY_NAME) as h:
        assert h["train_loss"].shape == (N_RUNS, 4) and np.isfinite(h["train_loss"]).all()
    assert _summary(out)["n_runs"] == N_RUNS


@pytest.mark.parametrize("n_dev,size,want", [(1, 5, 1), (2, 6, 2), (4, 6, 3), (3, 4, 2),
                                           (8, 5, 5), (4, 1, 1), (16, 12, 12)])
def test_mesh_size_is_the_largest_device_count_dividing_the_chunk(n_dev, size, want):
    assert dist.mesh_size(n_dev, size) == want


def test_fixed_plan_keeps_the_chunk_size():
    grid = Grid(seeds=tuple(range(5)), depths=(1, 2), widths=(3,))
    for size in (1, 3, 7):
        plan = dist.fixed_plan(Config(epochs=2), grid, size)
        assert plan.chunk_size == size and plan.n_chunks == -(-10 // size)


def _claim(out, cfg=Config(epochs=2), grid=Grid(seeds=(0, 1)), shards=2, size=2):
    return dist.claim_shared(out, outdir.make_manifest(cfg, grid),
                             {"chunk_size": size, "shards": shards, "prefix": "p"})


def test_claim_is_made_once_and_later_shards_take_its_layout(tmp_path):
    out = tmp_path / "out"
    assert _claim(out, size=4)["chunk_size"] == 4
    first = (out / outdir.MANIFEST_NAME).read_bytes()
    assert _claim(out, size=2)["chunk_size"] == 4  # the manifest decides
    assert (out / outdir.MANIFEST_NAME).read_bytes() == first
    assert sorted(p.name for p in out.iterdir()) == [outdir.CHUNKS_DIR, outdir.MANIFEST_NAME]


@pytest.mark.parametrize("kw,words", [
    ({"cfg": Config(epochs=3)}, ["different config"]),
    ({"grid": Grid(seeds=(0, 2))}, ["different grid"]),
    ({"shards": 3}, ["2 shards", "I/2"]),
])
def test_claim_refuses_another_sweep(tmp_path, kw, words):
    out = tmp_path / "out"
    _claim(out)
    with pytest.raises(ValueError) as e:
        _claim(out, **kw)
    msg = str(e.value)
    assert "\n" not in msg and str(out) in msg and all(w in msg for w in words), msg


def test_claim_refuses_foreign_files_and_unsharded_sweeps(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="notes.txt"):
        _claim(foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    plain = tmp_path / "plain"
    outdir.prepare_out_dir(plain, outdir.make_manifest(Config(epochs=2), Grid(seeds=(0, 1))),
                       overwrite=False)
    with pytest.raises(ValueError, match="without --shard"):
        _claim(plain)
    with pytest.raises(ValueError, match="without --shard"):
        dist.merge(plain)


@pytest.mark.parametrize("argv,words", [
    (["--shard", "3/3"], ["shard", "'3/3'", "0 <= I < N"]),
    (["--shard", "a/2"], ["shard", "'a/2'", "I/N"]),
    (["--shard", "0/2", "--overwrite"], ["overwrite", "--shard"]),
    (["--shard", "0/2", "--ray"], ["--ray", "--shard"]),
])
def test_bad_distribution_flags_one_line_exit_2(tmp_path, capsys, argv, words):
    from vgjax import cli
    out = tmp_path / "out"
    assert cli.main(["sweep", *ARGS, "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(w in err for w in words), err
    assert not out.exists()


def test_merge_of_a_directory_without_a_sweep_is_refused(tmp_path, capsys):
    from vgjax import cli
    assert cli.main(["merge", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no manifest.json" in err


# --------------------------------------------------------------------- multi-process JAX

# Slow enough per chunk (6 chunks of 2 runs) that a process can be killed mid-sweep: the
# kill follows a chunk file's appearance within 20 ms.
ARGS_MP = ARGS[:-4] + ["--epochs", "100", "--hist-every", "50", "--chunk-size", "2"]


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_processes(out: Path, cwd: Path, n: int = 2) -> list[subprocess.Popen]:
    coord = f"127.0.0.1:{_free_port()}"
    return [subprocess.Popen(_vgjax("sweep", *ARGS_MP, "--out", str(out), "--coordinator",
                                    coord, "--num-processes", str(n), "--process-id", str(i)),
                             env=_env(1), cwd=cwd, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for i in range(n)]


def _wait_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        stdout, stderr = p.communicate(timeout=TIMEOUT)
        assert p.returncode == 0, stdout[-1000:] + stderr[-3000:]


@pytest.fixture(scope="module")
def reference_2dev(tmp_path_factory) -> Path:
    """One process with 2 CPU devices: the total device count of the 2-process tests."""
    d = tmp_path_factory.mktemp("ref2")
    _ok(_run(_vgjax("sweep", *ARGS_MP, "--out", str(d / "out")), _env(2), d))
    return d / "out"


@pytest.mark.slow
def test_two_processes_equal_one_process_with_two_devices(reference_2dev, tmp_path):
    out = tmp_path / "out"
    _wait_all(_start_processes(out, tmp_path))
    assert_same_sweep(out, reference_2dev)
    assert _summary(out)["versions"]["device"] == "cpu:cpu x2"  # the mesh spans both


def _chunks(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / outdir.CHUNKS_DIR).glob("chunk_*.npz")}


def _kill_mid_sweep(out: Path, cwd: Path, killed: int, kept: dict[str, int]) -> dict[str, int]:
    """Start the two processes, SIGKILL process ``killed`` once a chunk not in ``kept`` is
    written; check the survivor's exit (status 1, within a bounded time, one line naming
    what was lost, JAX's runtime lines kept out of stderr). Returns the chunks now on disk,
    of which those in ``kept`` were not recomputed."""
    import re
    import signal
    import time
    procs = _start_processes(out, cwd)
    victim, survivor = procs[killed], procs[1 - killed]
    deadline = time.monotonic() + TIMEOUT
    while (set(_chunks(out)) <= set(kept) and time.monotonic() < deadline
           and survivor.poll() is None):
        time.sleep(0.02)
    assert survivor.poll() is None, "ended before the kill: " + survivor.communicate()[1][-2000:]
    victim.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    _, stderr = survivor.communicate(timeout=120)
    took = time.monotonic() - killed_at
    victim.wait(timeout=60)
    assert survivor.returncode == 1, stderr[-3000:]
    # bounded: a closed connection is seen at once; JAX's heartbeat timeout is 20 s
    assert took < 60, took
    last = stderr.strip().splitlines()[-1]
    who = ("process 0 of 2 lost another process" if killed == 1 else
           "process 1 of 2 lost process 0 (the coordinator)")
    assert last.startswith(f"vgjax: error: {who}") and "resume" in last, last
    log = re.search(r"\(JAX's log: (.+)\)$", last)
    if log:  # the runtime's own lines, kept out of stderr
        os.unlink(log.group(1))
    # no fatal trace from JAX's runtime: its log lines went to the file the line names
    assert not re.search(r"^[EF]\d{4} |Terminating process", stderr, re.M), stderr[-3000:]
    now = _chunks(out)
    assert {k: v for k, v in now.items() if k in kept} == kept, "finished chunks were recomputed"
    assert len(kept) < len(now) < 6 and not (out / outdir.SUMMARY_NAME).exists()
    return now


@pytest.mark.slow
def test_a_dead_process_stops_the_other_and_a_rerun_resumes(reference_2dev, tmp_path):
    """Process 1 killed: process 0's collective fails. Then, in the rerun, process 0 killed
    (the coordinator, whose loss JAX's runtime answers with a C++ abort): process 1 still
    ends with one line. Each time the survivor exits 1 within a bounded time, and the same
    command resumes, finally to the uninterrupted sweep's files."""
    out = tmp_path / "out"
    kept = _kill_mid_sweep(out, tmp_path, killed=1, kept={})
    kept = _kill_mid_sweep(out, tmp_path, killed=0, kept=kept)
    _wait_all(_start_processes(out, tmp_path))  # the same command: resumes
    assert {k: v for k, v in _chunks(out).items() if k in kept} == kept, \
        "finished chunks were recomputed"
    assert_same_sweep(out, reference_2dev)


@pytest.mark.parametrize("argv,words", [
    (["--coordinator", "nohost"], ["coordinator", "'nohost'", "HOST:PORT"]),
    (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"],
     ["process-id", "0..1"]),
    (["--coordinator", "127.0.0.1:1", "--process-id", "0"], ["num-processes", "None"]),
    (["--num-processes", "2"], ["--num-processes", "--coordinator"]),
])
def test_bad_multiprocess_flags_one_line_exit_2(tmp_path, capsys, argv, words):
    from vgjax import cli
    out = tmp_path / "out"
    assert cli.main(["sweep", *ARGS, "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(w in err for w in words), err
    assert not out.exists()


# ------------------------------------------------------------------------------------ Ray


def _ray_sweep(out: Path, cache: Path, **kw):
    """The reference sweep (ARGS, chunks of 2) through a local 2-CPU Ray instance."""
    from vgjax import cli
    from vgjax.cli.options import config_from
    args = cli.build_parser().parse_args(["sweep", *ARGS, "--out", str(out)])
    config = config_from(args)
    grid = Grid(seeds=(0, 1, 2, 3), depths=(1, 2, 3), widths=(5,))
    return dist.run_ray(config, grid, out, chunk_size=2, num_cpus=2, cache_dir=cache,
                        prefix=f"{config.activation}_{config.init}", **kw)


def _ray_workers_running_chunks() -> list[int]:
    """Pids of Ray worker processes executing a chunk task right now (by process title)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "cmdline").read_bytes().startswith(b"ray::compute_one_chunk"):
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


@pytest.mark.slow
def test_ray_sweep_survives_a_killed_worker_and_equals_a_local_sweep(reference, tmp_path):
    pytest.importorskip("ray")
    import signal
    import threading
    if not Path("/proc/self/cmdline").exists():
        pytest.skip("needs /proc to find a Ray worker")
    killed: list[int] = []
    stop = threading.Event()

    def kill_first_worker():  # SIGKILL the first worker seen training a chunk
        while not stop.is_set() and not killed:
            for pid in _ray_workers_running_chunks():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            stop.wait(0.02)

    killer = threading.Thread(target=kill_first_worker, daemon=True)
    killer.start()
    try:
        res = _ray_sweep(tmp_path / "out", tmp_path / "cache")
    finally:
        stop.set()
        killer.join(timeout=10)
    assert killed, "no Ray worker was seen training a chunk"
    out = tmp_path / "out"
    # every chunk exactly once, and the results those of the local sweep
    assert sorted(p.name for p in (out / outdir.CHUNKS_DIR).glob("chunk_*.npz")) == \
        [f"chunk_{c:05d}.npz" for c in range(6)]
    assert res.summary["n_runs"] == N_RUNS
    assert_same_sweep(out, reference)
    # the tasks' compiled program went to the persistent cache
    assert any("train" in p.name for p in (tmp_path / "cache").iterdir())


@pytest.mark.slow
def test_interrupted_ray_driver_resumes(reference, tmp_path):
    """SIGINT to the driver: exit 130, one line, no summary; the same command then resumes.

    The signal goes once the sweep has claimed its directory and again every 0.5 s until
    the driver says it was interrupted: a SIGINT that arrives while ``ray.init`` starts the
    local instance can be lost (seen on a loaded machine: the driver then finished, exit 0),
    while the tasks' start-up and compiling leave seconds for a later one. That the rerun
    leaves finished chunks alone is checked on a finished sweep whose summary and last
    chunks are removed, so no timing decides what is kept."""
    pytest.importorskip("ray")
    import signal
    import threading
    import time
    out = tmp_path / "out"
    env = _env(1)
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "cache")
    cmd = _vgjax("sweep", *ARGS, "--chunk-size", "2", "--out", str(out), "--ray")
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    claimed = out / outdir.MANIFEST_NAME
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None and not claimed.exists():
        time.sleep(0.01)
    while time.monotonic() < deadline and proc.poll() is None and not any(
            "interrupted" in line for line in lines):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
    proc.wait(timeout=120)
    reader.join(timeout=10)
    stderr = "".join(lines)
    assert proc.returncode == 130, stderr[-3000:]
    assert "interrupted" in stderr and not (out / outdir.SUMMARY_NAME).exists()
    _ok(_run(cmd, env, tmp_path))  # the same command finishes the interrupted sweep
    assert_same_sweep(out, reference)
    chunks = sorted((out / outdir.CHUNKS_DIR).glob("chunk_*.npz"))
    assert len(chunks) == 6
    for p in chunks[3:]:  # as if interrupted after three chunks
        p.unlink()
    for name in (outdir.SUMMARY_NAME, outdir.HISTORY_NAME):
        (out / name).unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in chunks[:3]}
    _ok(_run(cmd, env, tmp_path))
    assert {n: (out / outdir.CHUNKS_DIR / n).stat().st_mtime_ns for n in kept} == kept
    assert_same_sweep(out, reference)


def test_ray_missing_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    from vgjax import cli
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    out = tmp_path / "out"
    assert cli.main(["sweep", *ARGS, "--out", str(out), "--ray"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ray: not installed" in err and "vgjax[ray]" in err, err
    assert not out.exists()


def test_worker_env_sets_devices_and_the_compile_cache(tmp_path):
    env = dist.worker_env(3, tmp_path, environ={
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_dump_to=/x",
        "JAX_PLATFORMS": "cpu"})
    flags = env["XLA_FLAGS"].split()
    assert env["JAX_NUM_CPU_DEVICES"] == "3" and flags == ["--xla_dump_to=/x"]
    assert env["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path) and env["JAX_PLATFORMS"] == "cpu"


def test_multiprocess_ray_and_run_sweep_refuse_a_sharded_directory(tmp_path):
    """Their own chunk layout would discard the shards' chunks: refused, nothing changed.
    ``run_sweep`` (the one-machine pipeline, below vgjax.run.distributed) leaves merging to
    ``merge``; the CLI's plain ``vgjax sweep`` dispatches there (tested above)."""
    from vgjax.run.pipeline import run_sweep
    cfg, grid = Config(epochs=2), Grid(seeds=(0, 1))
    out = tmp_path / "out"
    _claim(out, cfg=cfg, grid=grid)
    before = sorted(str(p) for p in out.rglob("*"))
    runners = [dist.run_multiprocess, run_sweep]
    try:
        import ray  # noqa: F401
        runners.append(dist.run_ray)
    except ImportError:
        pass
    for run in runners:
        with pytest.raises(ValueError, match="array-job shards"):
            run(cfg, grid, out)
    assert sorted(str(p) for p in out.rglob("*")) == before


def test_supervisor_verdict_names_the_lost_coordinator_or_keeps_the_childs_line():
    from vgjax.run.distributed.supervise import verdict
    gone = ["F1129 16:44:37.680569   20944 client.h:80] Terminating process because the JAX "
            "distributed service detected fatal errors. absl::Status: UNAVAILABLE: Failed to "
            "send RPC to coordination service. Either the leader task was preempted/died"]
    line = verdict(1, 2, -6, None, gone, "/tmp/x.log")
    assert line.startswith("vgjax: error: process 1 of 2 lost process 0 (the coordinator)")
    assert "resume" in line and line.endswith("(JAX's log: /tmp/x.log)") and "\n" not in line
    # process 0 is the coordinator: it loses another process, as its own line says
    own = "vgjax: error: process 0 of 2 lost another process mid-sweep (Gloo); ... resume"
    assert verdict(0, 2, 1, own, gone, None) == own
    assert verdict(1, 2, 2, "vgjax: error: out: 'x' is a file", [], None) == \
        "vgjax: error: out: 'x' is a file"
    killed = verdict(1, 2, -9, None, [], None)
    assert "signal 9" in killed and "resume" in killed
    # the child's own line names no one, but process 0's address no longer answers
    child = "vgjax: error: process 1 of 2 lost another process mid-sweep (Gloo: reset)"
    line = verdict(1, 2, 1, child, [], None, coordinator_gone=True)
    assert line.startswith("vgjax: error: process 1 of 2 lost process 0 (the coordinator)")
    assert verdict(0, 2, 1, own, [], None, coordinator_gone=True) == own


def test_coordinator_reachability_is_a_tcp_connect():
    import socket

    from vgjax.run.distributed.supervise import _reachable
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        address = f"127.0.0.1:{s.getsockname()[1]}"
        assert _reachable(address, tries=2, wait_s=0.01)
    assert not _reachable(address, tries=2, wait_s=0.01)  # closed: refused


def test_supervisor_relays_output_and_holds_back_the_runtime_log(tmp_path):
    """A child that prints, logs like JAX's runtime, then aborts: its ordinary lines reach
    stderr, the log lines do not, and one line comes last."""
    from vgjax.run.distributed import supervise
    script = ("import sys, os\n"
              "sys.stderr.write('progress 1\\rprogress 2\\n'); sys.stderr.flush()\n"
              "sys.stderr.write('E1129 16:44:37.680093   20944 agent.cc:289] Polled an error\\n')\n"
              "sys.stderr.write('F1129 16:44:37.680569   20944 client.h:80] Terminating: "
              "Failed to send RPC to coordination service\\n')\n"
              "sys.stderr.write('Python trace after the abort\\n'); sys.stderr.flush()\n"
              "os.abort()\n")
    code = ("import sys; from vgjax.run.distributed import supervise as s\n"
            f"s.sys.executable = {sys.executable!r}\n"
            "import subprocess\n"
            "real = subprocess.Popen\n"
            f"s.subprocess.Popen = lambda cmd, **kw: real([cmd[0], '-c', {script!r}], **kw)\n"
            "sys.exit(s.supervise(['sweep'], 1, 2))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120,
                          env=_env(1))
    stderr = proc.stderr.decode()  # bytes: text mode would turn the \r into \n
    assert proc.returncode == 1, stderr
    lines = stderr.strip().split("\n")
    assert lines[0] == "progress 1\rprogress 2"
    assert len(lines) == 2 and lines[-1].startswith(
        "vgjax: error: process 1 of 2 lost process 0 (the coordinator)"), stderr
    log = lines[-1].split("JAX's log: ")[1].rstrip(")")
    held = Path(log).read_text()
    assert "Terminating" in held and "Python trace after the abort" in held
    os.unlink(log)
