"""A throwaway PostgreSQL server on loopback for the production-profile tests (Debian's `postgresql`).

Started from the installed binaries (`initdb`, `pg_ctl`) in a temporary directory on a free port;
as root, the server runs as the `postgres` system user (PostgreSQL refuses to run as root).
`available()` says why it cannot start, so the tests skip with that reason instead of failing.
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _binary(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def available() -> str | None:
    """None when a server can be started here, else the reason it cannot."""
    if not (_binary("initdb") and _binary("pg_ctl")):
        return "PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install postgresql"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' system user to run the server as"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server():
    """Yield connection settings {host, port, db, user, password} of a fresh server; stop it after."""
    root = Path(tempfile.mkdtemp(prefix="de_assets_pg_"))
    data = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def run(*cmd):
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True, timeout=120)

    try:
        run(_binary("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        run(_binary("pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
        run("psql" if shutil.which("psql") else _binary("psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
            "-c", "CREATE DATABASE dagster")
        yield {"host": "127.0.0.1", "port": str(port), "db": "dagster", "user": "postgres", "password": ""}
    finally:
        subprocess.run([*as_user, _binary("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
