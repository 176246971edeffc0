"""A private PostgreSQL server in a directory: the fleet's job store for tests, scripts and demos.

:class:`PostgresServer` creates a cluster with the installed server binaries
(Debian's ``postgresql`` package, which ``scripts/setup.sh`` installs; found
with ``pg_config --bindir``, then ``/usr/lib/postgresql/<newest>/bin``, then
``PATH``), starts it on one address and port, creates databases in it, and
stops it. PostgreSQL refuses to run as root, so under root the cluster belongs
to the ``postgres`` user the package creates (``nobody`` where there is none)
and the server binaries run as that user; the directory's parents must then be
traversable by it (``/tmp`` is; pytest's per-user temporary root is not).

Layout of ``dir``: ``data/`` (the cluster; kept, so a restart finds its
databases again), ``postgres.log``, the server's unix socket, and ``url``
(mode 0600): the superuser URL of the ``postgres`` database, with the random
password set when the cluster was created. TCP logins need that password
(SCRAM); unix-socket logins, which only the cluster's owner and root can reach,
are trusted. ``durable=False`` turns off fsync for throwaway test clusters.

From the shell::

    python -m harli_sgl.tools.postgres --dir D [--port P]           # foreground; Ctrl-C stops it
    python -m harli_sgl.tools.postgres --dir D [--port P] --daemon  # start, print the URL, return
    python -m harli_sgl.tools.postgres --dir D --url                # the URL of the running server
    python -m harli_sgl.tools.postgres --dir D --stop

Each start prints the URL on stdout as its only line, so
``url=$(python -m harli_sgl.tools.postgres --dir D --daemon)`` works in scripts.
A job-store URL is that URL with ``/postgres`` replaced by a database made with
:meth:`PostgresServer.create_database` (or ``--create-database NAME``).
"""

from __future__ import annotations

import argparse
import glob
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass

from harli_sgl.tools.server_process import free_port

SUPERUSER = "harli"
START_TIMEOUT_S = 60
SETUP_HINT = "run scripts/setup.sh, which installs the PostgreSQL server (Debian package postgresql)"
_SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")


class PostgresNotFound(RuntimeError):
    """No PostgreSQL server binaries are installed."""


def find_bindir() -> str:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``."""
    candidates: list[str] = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(versions, key=lambda p: [int(n) for n in re.findall(r"\d+", p)],
                         reverse=True)
    if shutil.which("pg_ctl"):
        candidates.append(os.path.dirname(os.path.realpath(shutil.which("pg_ctl"))))  # type: ignore[arg-type]
    for bindir in candidates:
        if bindir and all(os.access(os.path.join(bindir, b), os.X_OK) for b in _SERVER_BINARIES):
            return bindir
    raise PostgresNotFound(f"no PostgreSQL server binaries (initdb, pg_ctl, postgres) found; {SETUP_HINT}")


def _server_account() -> pwd.struct_passwd | None:
    """Who runs the server binaries: None for the caller, unless the caller is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root, and neither a 'postgres' nor a 'nobody' user exists to "
                       f"run PostgreSQL as; {SETUP_HINT}")


@dataclass
class PostgresServer:
    """A cluster in ``dir``, served on ``host``:``port`` (0: the previous port, else a free one)."""

    dir: str
    port: int = 0
    host: str = "127.0.0.1"
    durable: bool = True

    def __post_init__(self) -> None:
        self.dir = os.path.abspath(self.dir)
        self.bindir = find_bindir()
        self.account = _server_account()

    # -- paths -------------------------------------------------------------------------------

    @property
    def data_dir(self) -> str:
        return os.path.join(self.dir, "data")

    @property
    def log_path(self) -> str:
        return os.path.join(self.dir, "postgres.log")

    @property
    def _url_path(self) -> str:
        return os.path.join(self.dir, "url")

    @property
    def url(self) -> str:
        """The superuser URL of the ``postgres`` database (with the cluster's password)."""
        with open(self._url_path) as f:
            return f.read().strip()

    def database_url(self, name: str) -> str:
        return self.url.rsplit("/", 1)[0] + "/" + name

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> PostgresServer:
        """Create the cluster if ``dir`` has none, start the server and wait until it accepts logins."""
        self._prepare_dir()
        if not os.path.exists(os.path.join(self.data_dir, "PG_VERSION")):
            self._initdb()
        elif self.port == 0 and os.path.exists(self._url_path):
            self.port = int(re.search(r":(\d+)/", self.url).group(1))  # type: ignore[union-attr]
        if self.port == 0:
            self.port = free_port()
        options = [f"-p {self.port}", f"-h {shlex.quote(self.host)}", f"-k {shlex.quote(self.dir)}"]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        result = self._run(["pg_ctl", "-D", self.data_dir, "-l", self.log_path, "-w",
                            "-t", str(START_TIMEOUT_S), "-o", " ".join(options), "start"])
        if result.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start (pg_ctl: {result.stdout.strip()}); "
                               f"its log:\n{self._log_tail()}")
        self._write_url()
        return self

    def is_running(self) -> bool:
        return (os.path.isdir(self.data_dir)
                and self._run(["pg_ctl", "-D", self.data_dir, "status"]).returncode == 0)

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are disconnected); no-op if it is not up."""
        if self.is_running():
            self._run(["pg_ctl", "-D", self.data_dir, "-m", "fast", "-w", "stop"])

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases ---------------------------------------------------------------------------

    def create_database(self, name: str, template: str = "template1") -> str:
        """A new, empty database (a copy of ``template``); its URL."""
        self._admin("CREATE DATABASE {} TEMPLATE {}", name, template)
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name`` if it exists, disconnecting whoever is still connected."""
        self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)

    def _admin(self, statement: str, *names: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL(statement).format(*map(sql.Identifier, names)))

    # -- helpers -----------------------------------------------------------------------------

    def _prepare_dir(self) -> None:
        os.makedirs(self.dir, exist_ok=True)
        if self.account is not None:
            os.chown(self.dir, self.account.pw_uid, self.account.pw_gid)
        os.chmod(self.dir, 0o700)
        if self._run(["test", "-w", self.dir, "-a", "-x", self.dir], binary=False).returncode != 0:
            who = self.account.pw_name if self.account else "this user"
            raise RuntimeError(f"{self.dir} is not usable by {who}, who runs PostgreSQL: every "
                               "directory above it must be traversable (o+x), e.g. put it under /tmp")

    def _initdb(self) -> None:
        password = secrets.token_urlsafe(18)
        pwfile = os.path.join(self.dir, ".pwfile")
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        try:
            if self.account is not None:
                os.chown(pwfile, self.account.pw_uid, self.account.pw_gid)
            result = self._run(["initdb", "-D", self.data_dir, "-U", SUPERUSER, "--no-locale",
                                "-E", "UTF8", "--auth-local=trust", "--auth-host=scram-sha-256",
                                f"--pwfile={pwfile}"])
        finally:
            os.unlink(pwfile)
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout[-4000:]}")
        with open(os.path.join(self.dir, ".password"), "w", opener=_private) as f:
            f.write(password)

    def _write_url(self) -> None:
        with open(os.path.join(self.dir, ".password")) as f:
            password = f.read().strip()
        host = f"[{self.host}]" if ":" in self.host else self.host
        with open(self._url_path, "w", opener=_private) as f:
            f.write(f"postgresql://{SUPERUSER}:{password}@{host}:{self.port}/postgres\n")

    def _run(self, argv: list[str], binary: bool = True) -> subprocess.CompletedProcess:
        if binary:
            argv = [os.path.join(self.bindir, argv[0]), *argv[1:]]
        as_user = {}
        if self.account is not None:
            as_user = dict(user=self.account.pw_uid, group=self.account.pw_gid, extra_groups=[])
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        if self.account is not None:
            env["HOME"] = self.dir  # root's home is not the server's to touch
        # cwd: the server user may not be allowed into the caller's working directory.
        return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              cwd=self.dir, env=env, **as_user)

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return "(no log)"


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harli_sgl.tools.postgres",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True, help="the cluster's directory (created if new)")
    parser.add_argument("--port", type=int, default=0, help="0: the previous port, else a free one")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--no-fsync", action="store_true", help="throwaway data: no fsync")
    parser.add_argument("--create-database", metavar="NAME",
                        help="also create this database (if new) and print its URL instead")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--daemon", action="store_true", help="start, print the URL, and return")
    what.add_argument("--url", action="store_true", help="print the running server's URL")
    what.add_argument("--stop", action="store_true", help="stop the server")
    args = parser.parse_args(argv)

    server = PostgresServer(args.dir, args.port, args.host, durable=not args.no_fsync)
    if args.stop:
        server.stop()
        return 0
    if args.url:
        if not server.is_running():
            print(f"no server is running in {server.dir}", file=sys.stderr)
            return 1
        print(server.url)
        return 0
    if server.is_running():
        print(f"a server is already running in {server.dir}; --stop it first", file=sys.stderr)
        return 1
    server.start()
    url = server.url
    if args.create_database:
        import psycopg

        try:
            url = server.create_database(args.create_database)
        except psycopg.errors.DuplicateDatabase:
            url = server.database_url(args.create_database)
    print(url, flush=True)
    if args.daemon:
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        if not server.is_running():
            print(f"PostgreSQL stopped on its own; see {server.log_path}", file=sys.stderr)
            return 1
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
