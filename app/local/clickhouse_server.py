"""A real ClickHouse server on loopback, for development and the server-mode test pass, without Docker.

The npm package ``@chdb/lib-linux-x64-gnu`` at version 26.7.3-stable.1 ships ``libchdb.so`` (ClickHouse 26.7).
Its C entry point ``chdb_query_cmdline(argc, argv)`` runs clickhouse-local with real command-line arguments, and
this build accepts ``--http_port``, ``--tcp_port`` and ``--listen_host``: the query
``SYSTEM START LISTEN QUERIES ALL`` starts ClickHouse's own HTTP and native listeners. The server process then
blocks on a query reading a named pipe, and stops when a line is written to it (or on SIGTERM). Data under
``--path`` survives restarts. Limits of this build: one server per OS process, the ``default`` user without a
password, no built-in Keeper.

``python -m app clickhouse-server start|stop|status`` manages one such server under ``DATA_DIR/clickhouse-server``;
``make clickhouse-server`` starts it. The library is fetched once with ``npm pack`` into ``.tools/chdb-server``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from app.core.paths import REPO
from app.local import process
from app.local.process import LocalServiceError

PACKAGE = "@chdb/lib-linux-x64-gnu@26.7.3-stable.1"
LIB_DIR = REPO / ".tools" / "chdb-server"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0


class ServerError(LocalServiceError):
    """The local ClickHouse server could not be installed, started or stopped."""


def library(lib_dir: Path = LIB_DIR) -> Path:
    """Path of ``libchdb.so``, fetched with ``npm pack`` on first use."""
    lib = lib_dir / "libchdb.so"
    if lib.exists():
        return lib
    npm = shutil.which("npm")
    if npm is None:
        raise ServerError(
            f"npm is needed once to fetch {PACKAGE} (apt-get install npm), or put libchdb.so in {lib_dir}"
        )
    lib_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=lib_dir) as tmp:
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [npm, "pack", PACKAGE, "--pack-destination", tmp, "--silent"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise ServerError(f"npm pack {PACKAGE} failed: {done.stderr.strip()[-500:]}")
        (tgz,) = Path(tmp).glob("*.tgz")
        with tarfile.open(tgz) as archive:
            member = archive.getmember("package/libchdb.so")
            source = archive.extractfile(member)
            assert source is not None
            partial = lib.with_suffix(f".so.{os.getpid()}.partial")  # nodes may start side by side
            with open(partial, "wb") as out:
                shutil.copyfileobj(source, out)
            partial.replace(lib)
    return lib


@dataclass(frozen=True)
class ServerPaths:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def fifo(self) -> Path:
        return self.root / "stop.fifo"

    @property
    def pid(self) -> Path:
        return self.root / "server.pid"

    @property
    def ports(self) -> Path:
        return self.root / "ports"

    @property
    def log(self) -> Path:
        return self.root / "server.log"


def serve(lib: Path, paths: ServerPaths, http_port: int, tcp_port: int, extra: list[str]) -> int:
    """Run the server in this process until a line is written to the stop pipe (blocks)."""
    if "'" in str(paths.fifo) or "\\" in str(paths.fifo):
        raise ServerError(f"unsupported characters in the server path {paths.root}")
    fifo = str(paths.fifo)
    query = f"SYSTEM START LISTEN QUERIES ALL; SELECT count() FROM file('{fifo}', 'LineAsString')"  # noqa: S608
    args = [
        "clickhouse",
        f"--path={paths.data}",
        f"--http_port={http_port}",
        f"--tcp_port={tcp_port}",
        "--listen_host=127.0.0.1",
        *extra,
        "--multiquery",
        f"--query={query}",
    ]
    engine = ctypes.CDLL(str(lib))
    engine.chdb_query_cmdline.restype = ctypes.c_void_p
    argv = (ctypes.c_char_p * len(args))(*[a.encode() for a in args])
    engine.chdb_query_cmdline(len(args), argv)
    return 0


def _answers(http_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/ping", timeout=1) as reply:  # noqa: S310
            return bool(reply.read().strip() == b"Ok.")
    except OSError:
        return False


def status(paths: ServerPaths) -> str | None:
    """URL of the server under ``paths`` if it is running and answering, else None."""
    if not paths.pid.exists() or not paths.ports.exists():
        return None
    pid = int(paths.pid.read_text())
    http_port = int(paths.ports.read_text().split()[0])
    if process.pid_alive(pid) and _answers(http_port):
        return f"http://127.0.0.1:{http_port}"
    return None


def start(paths: ServerPaths, http_port: int = 0, tcp_port: int = 0, extra: list[str] | None = None) -> str:
    """Start a server (detached) and wait until it answers; returns its base URL. Reuses one already running."""
    running = status(paths)
    if running is not None:
        return running
    lib = library()
    paths.data.mkdir(parents=True, exist_ok=True)
    if not paths.fifo.exists():
        os.mkfifo(paths.fifo)
    if paths.ports.exists() and not http_port:
        http_port, tcp_port = (int(p) for p in paths.ports.read_text().split())
    http_port = http_port or process.free_port()
    tcp_port = tcp_port or process.free_port()
    argv = [sys.executable, "-m", "app.local.clickhouse_server", str(lib), str(paths.root), str(http_port)]
    proc = process.spawn([*argv, str(tcp_port), *(extra or [])], paths.log, paths.pid)
    paths.ports.write_text(f"{http_port} {tcp_port}")
    process.wait_ready(
        lambda: _answers(http_port), START_TIMEOUT_S, "the ClickHouse server", paths.log, poll_s=0.2, proc=proc
    )
    return f"http://127.0.0.1:{http_port}"


def stop(paths: ServerPaths) -> bool:
    """Stop the server cleanly (a line to its stop pipe), then by signal; False if none was running."""
    if not paths.pid.exists():
        return False
    pid = int(paths.pid.read_text())
    if not process.pid_alive(pid):
        paths.pid.unlink(missing_ok=True)
        return False
    with contextlib.suppress(OSError):
        fd = os.open(paths.fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, b"stop\n")
        finally:
            os.close(fd)
    if not process.wait_until(lambda: not process.pid_alive(pid), STOP_TIMEOUT_S / 3, poll_s=0.1):
        process.stop(pid, STOP_TIMEOUT_S / 3)
    paths.pid.unlink(missing_ok=True)
    return True


def main(argv: list[str]) -> int:
    """``python -m app.local.clickhouse_server LIB ROOT HTTP_PORT TCP_PORT [ARGS...]``: the server process itself."""
    lib, root, http_port, tcp_port, *extra = argv
    return serve(Path(lib), ServerPaths(Path(root)), int(http_port), int(tcp_port), extra)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
