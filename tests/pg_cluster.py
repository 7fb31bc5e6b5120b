"""A throwaway PostgreSQL cluster for the tests: a real server, never a mock.

``PgCluster`` runs ``initdb`` into a temporary directory and starts ``postgres`` on a
free loopback port with trust authentication, then hands out fresh databases. The
server binaries come from Debian's ``postgresql`` package (``.ci/run`` installs it when
missing); ``PG_BINDIR`` overrides where they are looked for. PostgreSQL refuses to run
as root (``postgres`` exits with "root execution of the PostgreSQL server is not
permitted"), so as root the cluster runs as the package's ``postgres`` user through
``runuser``.

When no server binaries are found, ``pg_available()`` is False and the fixtures in
``tests/conftest.py`` skip with the reason; ``.ci/run`` sets ``REQUIRE_POSTGRES=1`` so
that on CI a missing server is a failure rather than a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

__all__ = ["PgCluster", "pg_available", "pg_bindir"]

_SERVICE_USER = "postgres"


def pg_bindir() -> Path | None:
    """Where ``initdb`` and ``postgres`` are: ``PG_BINDIR``, Debian's layout, or PATH."""
    override = os.environ.get("PG_BINDIR")
    if override:
        return Path(override)
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    if debian:
        return debian[0].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def pg_available() -> bool:
    """True when a PostgreSQL server can be started here."""
    bindir = pg_bindir()
    if bindir is None or not (bindir / "postgres").exists():
        return False
    return os.geteuid() != 0 or _service_user_exists()


def _service_user_exists() -> bool:
    try:
        import pwd

        pwd.getpwnam(_SERVICE_USER)
    except KeyError:
        return False
    return shutil.which("runuser") is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgCluster:
    """One ``postgres`` process on 127.0.0.1 serving throwaway databases."""

    def __init__(self) -> None:
        self.port = 0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def admin_dsn(self) -> str:
        """The DSN of the cluster's ``postgres`` database (for CREATE/DROP DATABASE)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def dsn(self, database: str) -> str:
        """The DSN of ``database`` on this cluster."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60.0) -> None:
        """``initdb`` and start the server; return once it accepts connections."""
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError("no PostgreSQL server binaries (install Debian's postgresql)")
        self._dir = Path(tempfile.mkdtemp(prefix="groqbot-pg-"))
        data = self._dir / "data"
        as_root = os.geteuid() == 0
        if as_root:
            shutil.chown(self._dir, user=_SERVICE_USER)
        self._run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
            timeout=timeout,
        )
        self.port = _free_port()
        # fsync off and a small footprint: a test cluster trades durability for speed
        # (a power cut loses nothing the tests need). Unix sockets go in our own dir so
        # no write access to /var/run/postgresql is needed.
        command = [
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(self.port),
            "-h",
            "127.0.0.1",
            "-k",
            str(self._dir),
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=32MB",
        ]
        with open(self._dir / "server.log", "wb") as log:
            self._proc = subprocess.Popen(
                self._as_service_user(command), stdout=subprocess.DEVNULL, stderr=log
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited at start-up: {self.log_tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                if self._ready(bindir):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"postgres did not start in {timeout} s: {self.log_tail()}")

    def create_database(self) -> str:
        """Create a new empty database and return its DSN."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self._psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, dsn: str) -> None:
        """Drop the database ``dsn`` names (its connections are terminated first)."""
        name = dsn.rsplit("/", 1)[1]
        self._psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its files."""
        if self._proc is not None and self._proc.poll() is None:
            # SIGINT is PostgreSQL's "fast shutdown" (SIGTERM waits for clients to leave).
            # As root the child is runuser, so signal the postmaster its pid file names.
            try:
                os.kill(self._postmaster_pid(), signal.SIGINT)
            except (OSError, ValueError):
                self._proc.terminate()
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _postmaster_pid(self) -> int:
        assert self._dir is not None
        first = (self._dir / "data" / "postmaster.pid").read_text().splitlines()[0]
        return int(first)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log, for error messages."""
        if self._dir is None:
            return ""
        try:
            text = (self._dir / "server.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _ready(self, bindir: Path) -> bool:
        probe = bindir / "pg_isready"
        if not probe.exists():
            return True
        result = subprocess.run(
            [str(probe), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def _psql(self, sql: str) -> None:
        psql = shutil.which("psql") or str((pg_bindir() or Path("/usr/bin")) / "psql")
        subprocess.run(
            [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.admin_dsn, "-c", sql],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def _run(self, command: list[str], *, timeout: float) -> None:
        result = subprocess.run(
            self._as_service_user(command), capture_output=True, check=False, timeout=timeout
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{Path(command[0]).name} failed: {result.stderr.decode(errors='replace')}"
            )

    @staticmethod
    def _as_service_user(command: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return command
        return ["runuser", "-u", _SERVICE_USER, "--", *command]
