"""The shape every local service shares: free loopback ports, a server started in a process group of its own (its
pid in a file under the data dir), a wait until it answers, and a stop of its group.

A server is started either by ``spawn`` (a child in a new session, output appended to its log file, its pid
written here) or, for servers that daemonize themselves (``redis-server --daemonize yes``), by ``daemonize``: such a
server forks, calls ``setsid`` and writes its own pid file. Either way its pid leads its process group, so ``stop``
signals the whole group (helpers it forked included): SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from app.core.errors import UserMetricsError

LOOPBACK = "127.0.0.1"
POLL_S = 0.05


class LocalServiceError(UserMetricsError):
    """A local service could not be installed, started or stopped."""


def free_ports(count: int, usable: Callable[[int], bool] | None = None) -> list[int]:
    """``count`` distinct loopback ports that are free now (and pass ``usable``, when given). Every candidate stays
    bound until all are chosen, so the kernel never hands out one twice."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
            if usable is None or usable(port):
                ports.append(port)
        return ports
    finally:
        for sock in held:
            sock.close()


def free_port() -> int:
    """One loopback port that is free now."""
    return free_ports(1)[0]


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``port``. SO_REUSEADDR as servers set it: connections of a server that just
    died linger in TIME_WAIT on its port without preventing a new server from listening there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def spawn(argv: Sequence[str], log: Path, pid_file: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached, in a session (and process group) of its own, its output appended to ``log``; its pid
    goes to ``pid_file``. The process outlives this one."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - the launchers' own argv, no shell
            list(argv), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    pid_file.write_text(str(proc.pid))
    return proc


def daemonize(argv: Sequence[str]) -> None:
    """Run a server that daemonizes itself (it forks, calls ``setsid`` and writes its own pid file) and return once
    its launcher has exited."""
    subprocess.run(list(argv), check=True, stdout=subprocess.DEVNULL)  # noqa: S603 - the launchers' own argv


def read_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file``, or None when there is no such file (or it is still empty)."""
    with contextlib.suppress(OSError, ValueError):
        return int(pid_file.read_text().strip())
    return None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` is running (a zombie is dead; one that is our child is reaped here)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        # /proc/PID/stat: "pid (comm) state ..."; comm may contain spaces or parentheses.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def wait_until(
    probe: Callable[[], bool], timeout_s: float, poll_s: float = POLL_S, proc: subprocess.Popen[bytes] | None = None
) -> bool:
    """Poll ``probe`` until it holds (True), or until ``timeout_s`` has passed or ``proc`` has exited (False)."""
    deadline = time.monotonic() + timeout_s
    while not probe():
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


def wait_ready(
    probe: Callable[[], bool],
    timeout_s: float,
    what: str,
    log: Path | str,
    poll_s: float = POLL_S,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Wait until ``probe`` answers; else kill ``proc``'s group (a server started for this wait) and raise
    ``LocalServiceError`` naming ``log``, where the server says why."""
    if wait_until(probe, timeout_s, poll_s, proc):
        return
    if proc is not None:
        signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    raise LocalServiceError(f"{what} did not start; see {log}")


def signal_group(pid: int, sig: signal.Signals) -> None:
    """``sig`` to the process group that ``pid`` leads, or to ``pid`` alone when it leads none; a process that is
    gone already is no error."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def stop_all(pids: Iterable[int], grace_s: float) -> None:
    """Stop the process groups that ``pids`` lead, side by side: SIGTERM, then SIGKILL to those still running after
    ``grace_s``, then at most ``grace_s`` more for them to go."""
    pids = list(pids)
    for pid in pids:
        signal_group(pid, signal.SIGTERM)

    def gone() -> bool:
        return not any(pid_alive(pid) for pid in pids)

    if wait_until(gone, grace_s):
        return
    for pid in pids:
        if pid_alive(pid):
            signal_group(pid, signal.SIGKILL)
    wait_until(gone, grace_s)


def stop(pid: int, grace_s: float) -> None:
    """Stop the process group that ``pid`` leads: SIGTERM, then SIGKILL after ``grace_s``."""
    stop_all([pid], grace_s)
