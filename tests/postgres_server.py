"""A throwaway PostgreSQL server for the contract tests: a fresh cluster in a temporary folder,
listening on 127.0.0.1 at a free port, stopped and deleted at the end of the session.

Debian's `postgresql` package provides the binaries (scripts/test installs it when missing).
PostgreSQL refuses to run as root, so under root the server runs as the `postgres` system user.
When the server cannot be started, `start()` raises `PostgresUnavailable` with the reason: the
tests that need it fail loudly in CI (CI=true) and skip, saying why, elsewhere.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    pass


@dataclass
class PostgresServer:
    data_dir: Path
    port: int
    bin_dir: Path
    as_user: str | None

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://hybridlab@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "hybridlab", name)
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        except PostgresUnavailable:
            pass
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)

    def _run(self, tool: str, *args: str) -> str:
        cmd = [str(self.bin_dir / tool), *args]
        if self.as_user:
            cmd = ["runuser", "-u", self.as_user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise PostgresUnavailable(f"{' '.join(cmd)} failed: {done.stderr.strip()[-800:]}")
        return done.stdout


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PostgresUnavailable("no PostgreSQL binaries (install Debian's `postgresql` package; "
                              "./scripts/test does this when it runs as root)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start() -> PostgresServer:
    """Start a fresh cluster (trust authentication, loopback only); raise PostgresUnavailable."""
    bin_dir = _bin_dir()
    as_user = None
    if os.geteuid() == 0:
        as_user = "postgres"
        if shutil.which("runuser") is None:
            raise PostgresUnavailable("running as root without `runuser` to drop to 'postgres'")
    root = Path(tempfile.mkdtemp(prefix="hybridlab-pg-"))
    data_dir = root / "data"
    if as_user:
        os.chmod(root, 0o755)
        shutil.chown(root, user=as_user)
    server = PostgresServer(data_dir, _free_port(), bin_dir, as_user)
    try:
        server._run("initdb", "-D", str(data_dir), "-U", "hybridlab", "-A", "trust",
                    "--no-sync", "-E", "UTF8")
        opts = (f"-c listen_addresses=127.0.0.1 -c port={server.port} "
                f"-c unix_socket_directories={root} -c fsync=off -c max_connections=100")
        server._run("pg_ctl", "-D", str(data_dir), "-o", opts, "-l", str(root / "log"),
                    "-w", "-t", "60", "start")
    except (PostgresUnavailable, OSError, subprocess.TimeoutExpired) as e:
        log = root / "log"
        tail = log.read_text()[-800:] if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresUnavailable(f"{e}\n{tail}") from None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", server.port)) == 0:
                return server
        time.sleep(0.2)
    server.stop()
    raise PostgresUnavailable(f"the server did not listen on 127.0.0.1:{server.port} within 30 s")
