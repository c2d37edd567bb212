"""One clear line when a process of a multi-process JAX job loses a peer.

When process 0 (which hosts JAX's coordination service) dies, JAX's distributed runtime in
every other process aborts it from a C++ thread (``LOG(FATAL)``: a fatal trace and
SIGABRT), at whatever point the Python code is; its error callback cannot be replaced from
Python (the status it passes has no Python form). So ``vgjax sweep --coordinator ...`` runs
the sweep in a child process (:func:`supervise`) and watches it:

* the child's stderr is passed through, except JAX's runtime log lines (glog format) and
  everything after the first error among them, which are kept in a log file instead;
* when the child ends unsuccessfully, the parent prints one line last: which process was
  lost (process 0, the coordinator, when the runtime says the coordination service is
  gone), that the finished chunks are kept and that the same command resumes, and where
  the runtime's log is; it exits with the child's code (1 when the child was killed).

The child leaves at once when the parent dies (:func:`watch_parent`), so a killed process
takes its whole sweep with it, as a scheduler expects. Bounded time: the runtime notices a
closed connection at once and a silent peer after the heartbeat timeout
(:func:`vgjax.run.distributed.initialize`).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

WORKER_ENV = "VGJAX_SUPERVISOR_PID"
# glog lines: "E1129 16:44:37.680093   20944 coordination_service_agent.cc:289] ..."
_RUNTIME_LINE = re.compile(rb"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ [\w.\-]+:\d+\] ")
_FATAL_LINE = re.compile(rb"^[EF]\d{4} ")
# Lines the runtime prints after a log line of its own (gRPC details, C++ abort output).
_CONTINUED = re.compile(rb"^(Additional GRPC error|:\w+:Error received|terminate called|"
                        rb"\s+what\(\)|\*\*\* |\s+@ )")
_COORDINATOR_GONE = re.compile(r"coordination service|leader task|coordinator", re.I)
_RESUME = "finished chunks are kept: run the same command in every process to resume"


def is_worker() -> bool:
    """Whether this process is the supervised child that runs the sweep."""
    return bool(os.environ.get(WORKER_ENV))


def watch_parent(poll_s: float = 0.2) -> None:
    """In the child: exit at once (status 1) when the supervising parent is gone."""
    parent = int(os.environ.get(WORKER_ENV) or 0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)
    if parent:
        threading.Thread(target=watch, name="vgjax-parent-watch", daemon=True).start()


def supervise(argv: list[str], process_id: int | None, num_processes: int | None,
              coordinator: str | None = None) -> int:
    """Run ``vgjax ARGV`` in a child process and return its exit code, printing one clear
    line last if it fails (see the module docstring). ``coordinator`` (``HOST:PORT``): where
    to check, after a failure, whether process 0's coordination service is gone."""
    env = dict(os.environ, **{WORKER_ENV: str(os.getpid())})
    child = subprocess.Popen([sys.executable, "-m", "vgjax.cli", *argv], env=env,
                             stderr=subprocess.PIPE)
    # Ctrl-C reaches the child too (same process group); it reports and exits itself.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        held, last_error = _relay(child.stderr.fileno())
        rc = child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
        child.stderr.close()
    if rc == 0:
        return 0
    log = _save_log(held, process_id)
    gone = process_id != 0 and coordinator is not None and not _reachable(coordinator)
    print(verdict(process_id, num_processes, rc, last_error, held, log,
                  coordinator_gone=gone), file=sys.stderr, flush=True)
    return rc if rc > 0 else 1


def _relay(fd: int) -> tuple[list[str], str | None]:
    """Copy the child's stderr to ours segment by segment (``\\r`` too, for progress bars),
    holding back runtime log lines, the child's own ``vgjax: error:`` line and everything
    after the first runtime error. Returns (held lines, the child's error line)."""
    held: list[str] = []
    last_error = None
    buf = b""
    failing = False
    while True:
        data = os.read(fd, 65536)
        if not data:
            break
        buf += data
        parts = re.split(rb"(?<=[\r\n])", buf)
        buf = parts.pop()  # an unfinished segment waits for more
        for seg in parts:
            text = seg.decode("utf-8", "replace")
            if seg.startswith(b"vgjax: error:"):
                last_error = text.strip()
            elif failing or _RUNTIME_LINE.match(seg) or _CONTINUED.match(seg):
                failing = failing or bool(_FATAL_LINE.match(seg))
                held.append(text.rstrip("\r\n"))
            else:
                sys.stderr.write(text)
                sys.stderr.flush()
    if buf:
        held.append(buf.decode("utf-8", "replace"))
    return held, last_error


def _save_log(held: list[str], process_id: int | None) -> str | None:
    if not held:
        return None
    try:
        fd, path = tempfile.mkstemp(prefix=f"vgjax-process-{process_id}-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(held) + "\n")
        return path
    except OSError:
        return None


def _reachable(address: str, tries: int = 8, wait_s: float = 0.25) -> bool:
    """Whether ``HOST:PORT`` accepts a TCP connection in any of ``tries`` attempts (a dead
    process 0's child can hold its port for up to one parent-watch interval)."""
    host, _, port = address.rpartition(":")
    for i in range(tries):
        try:
            with socket.create_connection((host, int(port)), timeout=wait_s):
                if i == tries - 1:
                    return True
        except (OSError, ValueError):
            return False
        time.sleep(wait_s)
    return True


def verdict(me: int | None, n: int | None, rc: int, child_error: str | None,
            held: list[str], log: str | None, *, coordinator_gone: bool = False) -> str:
    """The one line a failed child leaves: a lost coordinator (for processes other than
    0, when the runtime says so or its address no longer answers), else the child's own
    error line, else what ended it."""
    who = f"process {me if me is not None else '?'}" + (f" of {n}" if n else "")
    where = f" (JAX's log: {log})" if log else ""
    errors = [h for h in held if _FATAL_LINE.match(h.encode())]
    if me != 0 and (coordinator_gone or any(_COORDINATOR_GONE.search(h) for h in errors)):
        return (f"vgjax: error: {who} lost process 0 (the coordinator) mid-sweep; "
                f"{_RESUME}{where}")
    if child_error is not None:
        return child_error + (where if where and "JAX's log" not in child_error else "")
    if errors:
        first = " ".join(errors[-1].split("] ", 1)[-1].split())[:160]
        return (f"vgjax: error: {who} was stopped by JAX's distributed runtime (another "
                f"process probably died: {first}); {_RESUME}{where}")
    how = f"signal {-rc}" if rc < 0 else f"status {rc}"
    return f"vgjax: error: {who} ended with {how} mid-sweep; {_RESUME}{where}"
