"""Real daemons on 127.0.0.1 for the cluster tests and the many-writers benchmark: munge, a
one-node SLURM (slurmctld, slurmd, and slurmdbd with MariaDB for job accounting, so
``sacct`` answers), PostgreSQL and an ``mlflow server`` backed by it. Everything lives in
one folder (configs, sockets, state, logs); nothing under /etc or /var is touched and the
system's own services, if any, are left alone. Needs root (the Debian packages install as
root, slurmd runs jobs as their user) and the Debian packages of :data:`PACKAGES`, which
:func:`install_packages` installs the way ``.ci/run`` installs everything.

::

    with LocalCluster(folder) as cluster:      # every daemon, stopped on exit (also on errors)
        cluster.slurm_env                      # SLURM_CONF=...: sbatch, squeue, sacct, scontrol
        cluster.tracking_uri                   # http://127.0.0.1:PORT (PostgreSQL behind it)
        cluster.postgres_uri                   # postgresql://...: an Optuna storage

``python tests/daemons.py FOLDER`` starts them all and waits (Ctrl-C stops them): a cluster to
try by hand.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Debian packages of the daemons (the binaries below come from them)
PACKAGES = ("munge", "slurm-wlm", "slurmdbd", "mariadb-server", "postgresql")
#: the programs each daemon needs
PROGRAMS = ("munged", "slurmctld", "slurmd", "slurmdbd", "mariadbd", "mariadb-install-db", "sbatch", "sacct")
#: PostgreSQL's server programs (not on PATH in Debian)
POSTGRES_BIN = Path("/usr/lib/postgresql")
#: the SLURM partition of the one node
PARTITION = "debug"
#: the cluster name in slurm.conf and the accounting database
CLUSTER = "g2gtest"


class DaemonError(RuntimeError):
    """A daemon did not start; the message says which and ends with its log."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's ``initdb`` and ``pg_ctl`` (the newest installed), or None."""
    found = sorted(POSTGRES_BIN.glob("*/bin/pg_ctl"), key=lambda path: float(path.parent.parent.name))
    return found[-1].parent if found else None


def missing() -> list[str]:
    """Why the daemons cannot start here (empty: they can)."""
    reasons = []
    if os.geteuid() != 0:
        reasons.append("not root (slurmd, munged and the Debian packages need root)")
    reasons += [f"{program} not found (Debian packages {' '.join(PACKAGES)})"
                for program in PROGRAMS if shutil.which(program) is None and not Path("/usr/sbin", program).exists()]
    if postgres_bin() is None:
        reasons.append("PostgreSQL server programs not found (Debian package postgresql)")
    return reasons


def install_packages() -> str | None:
    """Install :data:`PACKAGES` with apt-get when something is missing and this is root;
    returns why the daemons still cannot start (None: they can)."""
    if missing() and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                return f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}"
    reasons = missing()
    return "; ".join(reasons) if reasons else None


def _program(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class LocalCluster:
    """munge, SLURM with accounting, PostgreSQL and an MLflow server in ``folder`` (see
    the module doc); ``slurm=False`` or ``mlflow=False`` leaves those out."""

    def __init__(self, folder: Path, slurm: bool = True, mlflow: bool = True, cpus: int | None = None) -> None:
        self.folder = Path(folder)
        self.with_slurm, self.with_mlflow = slurm, mlflow
        self.cpus = cpus or os.cpu_count() or 1
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.stops: list = []     # called before the daemons stop (cancel SLURM jobs)
        self.cleanups: list = []  # called after (remove folders)
        self.node = socket.gethostname().split(".")[0]
        self.postgres_port = free_port()
        self.mlflow_port = free_port()
        self.slurm_env: dict[str, str] = {}

    # the addresses the tests use
    @property
    def postgres_uri(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.postgres_port}/optuna"

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def __enter__(self) -> LocalCluster:
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._postgres()
            if self.with_mlflow:
                self._mlflow()
            if self.with_slurm:
                self._munge()
                self._mariadb()
                self._slurm()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop every daemon started, the last first (also those started by a command)."""
        for stop in reversed(self.stops):
            with contextlib.suppress(Exception):
                stop()
        self.stops.clear()
        for _name, process in reversed(self.processes):
            if process.poll() is None:  # each daemon leads a process group (its workers too)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)
        self.processes.clear()
        for cleanup in self.cleanups:
            with contextlib.suppress(Exception):
                cleanup()
        self.cleanups.clear()

    def _spawn(self, name: str, command: list[str], env: dict | None = None, user: str | None = None) -> Path:
        log = self.folder / f"{name}.log"
        if user is not None:
            command = ["runuser", "-u", user, "--", *command]
        handle = log.open("ab")
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                   start_new_session=True)
        handle.close()
        self.processes.append((name, process))
        return log

    def _ready(self, name: str, check, what: str, log: Path, timeout: float = 60.0) -> None:
        """Wait until ``check()`` holds; a :class:`DaemonError` with the end of ``log`` when
        the daemon ``name`` exits first or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while not check():
            if self._exited(name):
                raise DaemonError(f"{what} exited while starting; its log {log}:\n{_log_tail(log)}")
            if time.monotonic() > deadline:
                raise DaemonError(f"{what} did not start within {timeout:.0f} s; its log {log}:\n{_log_tail(log)}")
            time.sleep(0.2)

    def _exited(self, name: str) -> bool:
        return any(process.poll() is not None for n, process in self.processes if n == name)

    # PostgreSQL: a cluster of its own, owned by the postgres user (initdb refuses root), in a
    # folder of /tmp that user can reach (pytest's folders are root's alone)
    def _postgres(self) -> None:
        bin_dir = postgres_bin()
        if bin_dir is None:
            raise DaemonError("PostgreSQL server programs not found (Debian package postgresql)")
        user = "postgres" if os.geteuid() == 0 else None
        outer = Path(tempfile.mkdtemp(prefix="g2g-postgres-"))
        outer.chmod(0o755)
        self.cleanups.append(lambda: shutil.rmtree(outer, ignore_errors=True))
        data = outer / "data"
        data.mkdir(mode=0o700)
        if user:
            shutil.chown(data, user, user)
        runas = ["runuser", "-u", user, "--"] if user else []
        subprocess.run([*runas, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True)
        (self.folder / "postgres").symlink_to(data)  # beside the other daemons' files
        log = self._spawn("postgres", [str(bin_dir / "postgres"), "-D", str(data), "-p", str(self.postgres_port),
                                       "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={data}",
                                       "-c", "fsync=off", "-c", "max_connections=200"], user=user)
        self._ready("postgres", lambda: _port_open(self.postgres_port), "PostgreSQL", log)
        psql = shutil.which("psql") or str(bin_dir / "psql")
        for database in ("mlflow", "optuna"):
            for _ in range(50):  # the server accepts connections a moment after it listens
                done = subprocess.run([psql, "-h", "127.0.0.1", "-p", str(self.postgres_port), "-U", "postgres",
                                       "-c", f"CREATE DATABASE {database}"], capture_output=True, text=True)
                if done.returncode == 0:
                    break
                time.sleep(0.2)
            else:
                raise DaemonError(f"PostgreSQL: CREATE DATABASE {database} failed: {done.stderr}")

    # mlflow server backed by PostgreSQL, artifacts proxied into the folder
    def _mlflow(self) -> None:
        artifacts = self.folder / "mlflow-artifacts"
        artifacts.mkdir()
        log = self._spawn("mlflow", [sys.executable, "-m", "mlflow", "server",
                                     "--backend-store-uri",
                                     f"postgresql+psycopg2://postgres@127.0.0.1:{self.postgres_port}/mlflow",
                                     "--artifacts-destination", str(artifacts), "--host", "127.0.0.1",
                                     "--port", str(self.mlflow_port), "--workers", "2"])

        def answers() -> bool:
            import urllib.request
            try:
                with urllib.request.urlopen(f"{self.tracking_uri}/health", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False
        self._ready("mlflow", answers, "mlflow server", log, timeout=120)

    # munge: its own key and socket
    def _munge(self) -> None:
        folder = self.folder / "munge"
        folder.mkdir(mode=0o700)
        key = folder / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.munge_socket = folder / "munge.socket"
        log = self._spawn("munged", [_program("munged"), "--foreground", "--force", f"--key-file={key}",
                                     f"--socket={self.munge_socket}", f"--pid-file={folder / 'munged.pid'}",
                                     f"--log-file={folder / 'munged.log'}", f"--seed-file={folder / 'munged.seed'}"])
        self._ready("munged", self.munge_socket.exists, "munged", log)

    # MariaDB: the accounting database of slurmdbd
    def _mariadb(self) -> None:
        folder = self.folder / "mariadb"
        folder.mkdir()
        self.mariadb_socket = folder / "mysqld.sock"
        subprocess.run([_program("mariadb-install-db"), f"--datadir={folder / 'data'}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"], check=True, capture_output=True)
        self.mariadb_port = free_port()
        log = self._spawn("mariadb", [_program("mariadbd"), "--no-defaults", f"--datadir={folder / 'data'}",
                                      f"--socket={self.mariadb_socket}", f"--port={self.mariadb_port}",
                                      "--bind-address=127.0.0.1", "--user=root", f"--pid-file={folder / 'mysqld.pid'}",
                                      "--innodb-flush-log-at-trx-commit=0", "--skip-log-bin"])
        self._ready("mariadb", lambda: _port_open(self.mariadb_port), "MariaDB", log)

    def _slurm(self) -> None:
        folder = self.folder / "slurm"
        for sub in ("state", "spool"):
            (folder / sub).mkdir(parents=True)
        self.slurmctld_port, self.slurmd_port, self.slurmdbd_port = free_port(), free_port(), free_port()
        munge = f"socket={self.munge_socket}"
        dbd = folder / "slurmdbd.conf"
        dbd.write_text(f"""AuthType=auth/munge
AuthInfo={munge}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={self.slurmdbd_port}
SlurmUser=root
LogFile={folder / 'slurmdbd.log'}
PidFile={folder / 'slurmdbd.pid'}
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.mariadb_port}
StorageUser=root
StorageLoc=slurm_acct_db
""")
        dbd.chmod(0o600)
        conf = folder / "slurm.conf"
        conf.write_text(f"""ClusterName={CLUSTER}
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={self.slurmctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo={munge}
StateSaveLocation={folder / 'state'}
SlurmdSpoolDir={folder / 'spool'}
SlurmctldPidFile={folder / 'slurmctld.pid'}
SlurmdPidFile={folder / 'slurmd.pid'}
SlurmctldLogFile={folder / 'slurmctld.log'}
SlurmdLogFile={folder / 'slurmd.log'}
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={self.slurmdbd_port}
AccountingStoragePass={self.munge_socket}
JobRequeue=1
KillWait=30
MinJobAge=300
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=4000 State=UNKNOWN
PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
""")
        self.slurm_env = {"SLURM_CONF": str(conf)}  # slurmdbd reads slurmdbd.conf beside it
        env = self.slurm_env
        log = self._spawn("slurmdbd", [_program("slurmdbd"), "-D"], env=env)
        self._ready("slurmdbd", lambda: _port_open(self.slurmdbd_port), "slurmdbd", log)
        subprocess.run(["sacctmgr", "-i", "add", "cluster", CLUSTER], env={**os.environ, **env}, capture_output=True)
        log = self._spawn("slurmctld", [_program("slurmctld"), "-D", "-i", "-f", str(conf)], env=env)
        self._ready("slurmctld", lambda: _port_open(self.slurmctld_port), "slurmctld", log)
        log = self._spawn("slurmd", [_program("slurmd"), "-D", "-f", str(conf)], env=env)

        def node_idle() -> bool:
            done = subprocess.run(["sinfo", "-h", "-o", "%t"], env={**os.environ, **env}, capture_output=True,
                                  text=True)
            return done.stdout.strip() in ("idle", "mix", "alloc")
        self._ready("slurmd", node_idle, "slurmd (the node idle in sinfo)", log)
        self.stops.append(lambda: subprocess.run(["scancel", "--full", "-u", "root"], env={**os.environ, **env},
                                                 capture_output=True, timeout=20))

    def sacct_state(self, job_id: str, timeout: float = 60.0) -> str:
        """The job's final state in the accounting database (``sacct``), e.g. ``COMPLETED``
        or ``CANCELLED``: polled until it is no longer pending, running or completing (the
        record reaches slurmdbd a moment after the job ends), at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            done = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "State", "-j", str(job_id)],
                                  env={**os.environ, **self.slurm_env}, capture_output=True, text=True, check=True)
            state = done.stdout.strip().splitlines()[0].split()[0] if done.stdout.strip() else ""
            if state not in ("", "PENDING", "RUNNING", "REQUEUED", "COMPLETING") or time.monotonic() > deadline:
                return state
            time.sleep(0.5)


if __name__ == "__main__":
    reason = install_packages()
    if reason:
        sys.exit(f"cannot start the daemons: {reason}")
    with LocalCluster(Path(sys.argv[1])) as cluster:
        print(f"export SLURM_CONF={cluster.slurm_env['SLURM_CONF']}")
        print(f"tracking.uri={cluster.tracking_uri}  optuna storage: {cluster.postgres_uri}", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
