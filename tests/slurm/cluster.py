"""A real single-node Slurm for the tests: munged, slurmctld and slurmd from Debian's packages
(and, for the accounting path, MariaDB and slurmdbd), as child processes of the test session.

Everything lives under one private directory: a private munge key and socket, a private
slurm.conf on loopback with free ports, private state, spool and log directories. Commands find
the cluster through ``SLURM_CONF`` (``Cluster.env``). Nothing touches /etc, /run or the
system's services, so several test sessions can run their clusters side by side.

Facts of this machine the configuration encodes (Debian 12, slurm-wlm 22.05, run as root):

- munged runs as user ``munge``; its socket directory needs execute permission for everybody
  and every directory above must be reachable by that user, so the base directory is a 0755
  directory under /tmp (pytest's tmp tree is 0700 root).
- ``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``: no cgroups, except in the
  cluster started with ``cgroup=True``: ``proctrack/cgroup`` and ``task/cgroup`` on this
  machine's cgroup v1 hierarchies (root may write them), which hold each job to its
  ``--mem`` and end a job over it ``OUT_OF_MEMORY``.
- ``SlurmdParameters=config_overrides`` lets the node claim 4 CPUs and 4 GiB on a 2-core
  machine, so ``-c`` and ``--mem`` requests are real constraints the scheduler enforces.
- ``EnforcePartLimits=ALL`` makes sbatch refuse a request the partition can never satisfy
  (``-c 64``) instead of leaving it pending for ever with reason ``PartitionConfig``.
- ``KillWait=2``: scancel and time limits escalate to SIGKILL after 2 s (Slurm's default is 30).
- ``SchedulerParameters=batch_sched_delay=0``: a trivial job reaches COMPLETED about 1 s after
  sbatch (0.2 s on an idle controller), instead of up to 3 s more with Slurm's default.
- ``JobAcctGatherParams=OverMemoryKill`` with a 1 s sample: a job over its ``--mem`` is killed.
- Slurm commands that cannot reach slurmctld retry for about 9 s before failing, so readiness
  is checked on the TCP port first.
- The container's pid 1 does not reap orphans: a ``<defunct>`` slurmstepd per finished job
  accumulates; harmless.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
START_TIMEOUT = 30.0  # seconds for a daemon to come up; it takes about 1 s here
STOP_TIMEOUT = 10.0
COMMAND_TIMEOUT = 15.0  # a Slurm command against a live controller answers in milliseconds

# What the node claims to be. Tests size their requests against these.
NODE_CPUS = 4
NODE_MEM_MB = 4096
DEF_MEM_PER_CPU_MB = 128  # a job without --mem gets this much per CPU, not the whole node


class Unavailable(Exception):
    """Slurm cannot run here; the message is the skip reason."""


def find(program: str) -> str | None:
    """The program on PATH or in the usual sbin directories (root's PATH may lack them)."""
    found = shutil.which(program)
    if found:
        return found
    for d in SBIN:
        p = Path(d) / program
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def require(*programs: str, packages: str) -> dict[str, str]:
    """Paths of ``programs``, or ``Unavailable`` naming the Debian packages that provide them."""
    paths: dict[str, str] = {}
    missing = []
    for p in programs:
        path = find(p)
        if path is None:
            missing.append(p)
        else:
            paths[p] = path
    if missing:
        raise Unavailable(
            f"{', '.join(missing)} not installed (Debian packages {packages}; "
            "tests/system-packages.sh installs them with apt-get)"
        )
    if os.geteuid() != 0:
        raise Unavailable(
            "the test Slurm runs its daemons as root (Debian's slurm-wlm 22.05 with "
            "proctrack/linuxproc); these tests need root"
        )
    return paths


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} not readable)"
    return f"--- {path.name} ---\n" + "\n".join(text.splitlines()[-lines:])


def bounded_wait(what: str, predicate: object, timeout: float, logs: list[Path]) -> None:
    """Poll ``predicate()`` until true; after ``timeout`` raise with the daemons' logs."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"timed out after {timeout} s waiting for {what}\n"
                + "\n".join(tail(p) for p in logs)
            )
        time.sleep(delay)  # polling interval of a bounded wait
        delay = min(delay * 2, 0.1)


def public_dir(prefix: str) -> Path:
    """A fresh 0755 directory under /tmp that the munge and mysql users can traverse."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@dataclass
class Daemon:
    """One long-running child process and the log its output goes to."""

    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] | None = None
    user: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                user=self.user,
                group=self.user,
                extra_groups=[] if self.user else None,
                cwd=self.log.parent,
            )

    def check(self) -> None:
        """Raise if the process has died (with its log)."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with status {self.proc.returncode}\n{tail(self.log)}"
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; kills its descendants too (by pid)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            descendants = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        for child in descendants:
            with contextlib.suppress(psutil.Error):
                if child.is_running():
                    child.kill()


@dataclass
class Munge:
    """munged on a private socket with a private key, running as user ``munge``."""

    dir: Path
    daemon: Daemon | None = None

    @property
    def socket(self) -> str:
        return str(self.dir / "munge.sock")

    def start(self) -> Munge:
        paths = require("munged", "mungekey", "munge", packages="munge")
        try:
            pw = pwd.getpwnam("munge")
        except KeyError as e:
            raise Unavailable("user munge does not exist (Debian package munge)") from e
        self.dir.mkdir(mode=0o755)
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.dir.chmod(0o755)  # munged wants execute permission for all on the socket's dir
        key = self.dir / "munge.key"
        subprocess.run(
            [paths["mungekey"], "--create", f"--keyfile={key}"],
            check=True,
            user="munge",
            group="munge",
            extra_groups=[],
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
        )
        log = self.dir / "munged.log"
        self.daemon = Daemon(
            "munged",
            [
                paths["munged"],
                "--foreground",
                f"--socket={self.socket}",
                f"--key-file={key}",
                f"--pid-file={self.dir / 'munged.pid'}",
                f"--seed-file={self.dir / 'munged.seed'}",
                "--num-threads=4",
            ],
            log,
            user="munge",
        )
        self.daemon.start()
        bounded_wait(
            "munged's socket", lambda: self._alive() and Path(self.socket).exists(), 10, [log]
        )
        return self

    def _alive(self) -> bool:
        assert self.daemon is not None
        self.daemon.check()
        return True

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()


@dataclass
class Cluster:
    """slurmctld and slurmd for one single-node cluster; optionally with accounting."""

    dir: Path
    name: str
    munge: Munge
    accounting_port: int | None = None  # slurmdbd's port, if this cluster stores accounting
    node: str = ""
    ctld_port: int = 0
    slurmd_port: int = 0
    ctld: Daemon | None = None
    slurmd: Daemon | None = None
    programs: dict[str, str] = field(default_factory=dict)
    accounting: Accounting | None = None  # slurmdbd and its database, when there are any
    cgroup: bool = False  # memory held by cgroup v1 (task/cgroup): OUT_OF_MEMORY ends

    @property
    def conf(self) -> Path:
        return self.dir / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """The environment for Slurm commands (and sjq daemons) that talk to this cluster."""
        return dict(os.environ, SLURM_CONF=str(self.conf))

    @property
    def logs(self) -> list[Path]:
        return sorted((self.dir / "log").glob("*.log"))

    def config_text(self) -> str:
        d = self.dir
        lines = [
            f"ClusterName={self.name}",
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge.socket}",
            f"StateSaveLocation={d / 'state'}",
            f"SlurmdSpoolDir={d / 'spool'}",
            f"SlurmctldPidFile={d / 'state' / 'slurmctld.pid'}",
            f"SlurmdPidFile={d / 'spool' / 'slurmd.pid'}",
            f"SlurmctldLogFile={d / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={d / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "JobAcctGatherType=jobacct_gather/linux",
            # Sample each job's processes every second, and kill a job that uses more memory
            # than it asked for: with no cgroups here this is what makes --mem real. (Such a
            # job ends FAILED, killed by SIGKILL; OUT_OF_MEMORY needs task/cgroup.)
            "JobAcctGatherFrequency=task=1",
            "JobAcctGatherParams=OverMemoryKill",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "MailProg=/bin/true",
            "ReturnToService=2",
            "SlurmdParameters=config_overrides",
            "EnforcePartLimits=ALL",
            "KillWait=2",
            # Schedule a submitted job at once: with the default (3 s) a job submitted within
            # 3 s of another job's end waits that long. Tests and the bench both want speed.
            "SchedulerParameters=batch_sched_delay=0",
            "MinJobAge=300",  # Slurm's default: how long a finished job stays in squeue
            f"DefMemPerCPU={DEF_MEM_PER_CPU_MB}",
            f"NodeName={self.node} NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1"
            f" CPUs={NODE_CPUS} RealMemory={NODE_MEM_MB} State=UNKNOWN",
            f"PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
        ]
        if self.cgroup:
            # slurmd puts each job in a memory cgroup of its own (cgroup v1 here, writable by
            # root): the kernel holds a job to its --mem and Slurm ends it OUT_OF_MEMORY.
            (self.dir / "cgroup.conf").write_text(
                "CgroupPlugin=cgroup/v1\nCgroupMountpoint=/sys/fs/cgroup\n"
                "CgroupAutomount=no\nConstrainRAMSpace=yes\nConstrainSwapSpace=no\n"
            )
            swap = {
                "ProctrackType=proctrack/linuxproc": "ProctrackType=proctrack/cgroup",
                "TaskPlugin=task/none": "TaskPlugin=task/cgroup",
            }
            lines = [swap.get(x, x) for x in lines if x != "JobAcctGatherParams=OverMemoryKill"]
        if self.accounting_port is None:
            lines.append("AccountingStorageType=accounting_storage/none")
        else:
            lines += [
                "AccountingStorageType=accounting_storage/slurmdbd",
                "AccountingStorageHost=localhost",
                f"AccountingStoragePort={self.accounting_port}",
                # For slurmdbd connections the munge socket is given here, not by AuthInfo.
                f"AccountingStoragePass={self.munge.socket}",
                "AccountingStoreFlags=job_comment",
            ]
        return "\n".join(lines) + "\n"

    def start(self) -> Cluster:
        self.programs = require(
            "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel",
            packages="slurm-wlm and munge",
        )  # fmt: skip
        self.node = self.node or f"{self.name}n1"
        if not self.ctld_port:
            self.ctld_port, self.slurmd_port = free_port(), free_port()
        for sub in ("state", "spool", "log"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self.config_text())
        env = self.env
        self.ctld = Daemon(
            "slurmctld",
            [self.programs["slurmctld"], "-D", "-i", "-f", str(self.conf)],
            self.dir / "log" / "slurmctld.out.log",
            env=env,
        )
        self.slurmd = Daemon(
            "slurmd",
            [self.programs["slurmd"], "-D", "-N", self.node, "-f", str(self.conf)],
            self.dir / "log" / "slurmd.out.log",
            env=env,
        )
        self.start_controller()
        self.slurmd.start()
        self.wait_idle()
        return self

    def start_controller(self) -> None:
        """Start slurmctld (again) and wait until it accepts connections."""
        assert self.ctld is not None
        self.ctld.start()
        bounded_wait(
            "slurmctld to listen",
            lambda: self._check() and port_open(self.ctld_port),
            START_TIMEOUT,
            self.logs,
        )

    def stop_controller(self) -> None:
        assert self.ctld is not None
        self.ctld.stop()

    @contextlib.contextmanager
    def controller_stopped(self) -> Iterator[None]:
        """slurmctld is down inside the block and up again (with its saved state) after it."""
        self.stop_controller()
        try:
            yield
        finally:
            self.start_controller()

    def _check(self) -> bool:
        """True, or an error with the log of whichever daemon has died."""
        for d in (self.ctld, self.slurmd, self.munge.daemon):
            if d is not None:
                d.check()
        return True

    def command(self, *argv: str, timeout: float = COMMAND_TIMEOUT) -> str:
        """Run a Slurm command against this cluster; its stdout, or an error with stderr."""
        p = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=timeout, cwd=self.dir
        )
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
        return p.stdout

    def node_state(self) -> str:
        return self.command("sinfo", "-h", "-n", self.node, "-o", "%T").strip()

    def wait_idle(self, timeout: float = START_TIMEOUT) -> None:
        """Until the node is idle: registered, and no job holds any of its resources."""
        bounded_wait(
            f"node {self.node} to be idle",
            lambda: self._check() and self.node_state() == "idle",
            timeout,
            self.logs,
        )

    def cancel_all(self, timeout: float = START_TIMEOUT) -> None:
        """Cancel every job and wait until none is left pending, running or completing."""
        if not (self.ctld and self.ctld.running):
            return
        self.command("scancel", "--full", f"--user={os.getuid()}")
        bounded_wait(
            "every job to end",
            lambda: not self.command("squeue", "-h", "-t", "PD,R,CG,CF,S,ST,RQ", "-o", "%i"),
            timeout,
            self.logs,
        )

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.cancel_all(timeout=10)
        for d in (self.slurmd, self.ctld):
            if d is not None:
                d.stop()


@dataclass
class Accounting:
    """MariaDB on a private data directory and port, and slurmdbd in front of it."""

    dir: Path
    munge: Munge
    cluster_name: str
    db_port: int = 0
    dbd_port: int = 0
    mariadb: Daemon | None = None
    slurmdbd: Daemon | None = None

    PASSWORD = "sjq-test"  # the database listens on loopback only, for this test session

    @property
    def db_dir(self) -> Path:
        """MariaDB's own directory (data, socket, pid file), owned by user mysql."""
        return self.dir / "db"

    @property
    def socket(self) -> str:
        return str(self.db_dir / "mysqld.sock")

    def start(self) -> Accounting:
        programs = require(
            "mariadbd", "mariadb-install-db", "mariadb", "slurmdbd", "sacctmgr", "sacct",
            packages="mariadb-server and slurmdbd",
        )  # fmt: skip
        try:
            mysql = pwd.getpwnam("mysql")
        except KeyError as e:
            raise Unavailable("user mysql does not exist (Debian package mariadb-server)") from e
        log = self.dir / "log"
        log.mkdir(parents=True, exist_ok=True)
        self.db_dir.mkdir(mode=0o755)
        os.chown(self.db_dir, mysql.pw_uid, mysql.pw_gid)  # mariadbd creates its socket here
        data = self.db_dir / "data"
        self.db_port, self.dbd_port = free_port(), free_port()
        subprocess.run(
            [
                programs["mariadb-install-db"],
                "--no-defaults",
                f"--datadir={data}",
                "--user=mysql",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
                "--skip-name-resolve",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.mariadb = Daemon(
            "mariadbd",
            [
                programs["mariadbd"],
                "--no-defaults",
                f"--datadir={data}",
                f"--socket={self.socket}",
                f"--port={self.db_port}",
                "--bind-address=127.0.0.1",
                "--user=mysql",
                f"--pid-file={self.db_dir / 'mysqld.pid'}",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=16M",
                # Durability is not what these tests measure; fsync per commit slows slurmdbd.
                "--innodb-flush-log-at-trx-commit=0",
            ],
            log / "mariadbd.log",
        )
        self.mariadb.start()
        bounded_wait(
            "MariaDB to accept connections",
            lambda: self._sql(programs["mariadb"], "SELECT 1"),
            START_TIMEOUT,
            [log / "mariadbd.log"],
        )
        if not self._sql(
            programs["mariadb"],
            f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{self.PASSWORD}';"
            " GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';",
        ):
            raise RuntimeError("could not create the database user for slurmdbd")
        conf = self.dir / "slurmdbd.conf"
        conf.write_text(
            "\n".join(
                [
                    "AuthType=auth/munge",
                    f"AuthInfo=socket={self.munge.socket}",
                    "DbdHost=localhost",
                    "DbdAddr=127.0.0.1",
                    f"DbdPort={self.dbd_port}",
                    "SlurmUser=root",
                    f"PidFile={self.dir / 'slurmdbd.pid'}",
                    f"LogFile={log / 'slurmdbd.log'}",
                    "StorageType=accounting_storage/mysql",
                    "StorageHost=127.0.0.1",
                    f"StoragePort={self.db_port}",
                    "StorageUser=slurm",
                    f"StoragePass={self.PASSWORD}",
                    "StorageLoc=slurm_acct_db",
                ]
            )
            + "\n"
        )
        conf.chmod(0o600)  # slurmdbd refuses a config file others can read
        # slurmdbd reads slurmdbd.conf from the directory of $SLURM_CONF.
        env = dict(os.environ, SLURM_CONF=str(self.dir / "slurm.conf"))
        self.slurmdbd = Daemon(
            "slurmdbd", [programs["slurmdbd"], "-D"], log / "slurmdbd.out.log", env=env
        )
        self.slurmdbd.start()
        bounded_wait(
            "slurmdbd to listen",
            lambda: self._dbd_alive() and port_open(self.dbd_port),
            START_TIMEOUT,
            [log / "slurmdbd.out.log", log / "slurmdbd.log"],
        )
        return self

    def _dbd_alive(self) -> bool:
        assert self.slurmdbd is not None
        self.slurmdbd.check()
        return True

    def _sql(self, client: str, statement: str) -> bool:
        assert self.mariadb is not None
        self.mariadb.check()
        p = subprocess.run(
            [client, "--no-defaults", f"--socket={self.socket}", "-u", "root", "-e", statement],
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
        )
        return p.returncode == 0

    @contextlib.contextmanager
    def slurmdbd_stopped(self) -> Iterator[None]:
        """slurmdbd is down inside the block and up again after it."""
        assert self.slurmdbd is not None
        self.slurmdbd.stop()
        try:
            yield
        finally:
            self.slurmdbd.start()
            bounded_wait(
                "slurmdbd to listen",
                lambda: self._dbd_alive() and port_open(self.dbd_port),
                START_TIMEOUT,
                [self.dir / "log" / "slurmdbd.out.log"],
            )

    def add_cluster(self, cluster: Cluster) -> None:
        """Register the cluster in the database before its slurmctld starts."""
        cluster.command("sacctmgr", "-i", "add", "cluster", cluster.name)

    def stop(self) -> None:
        for d in (self.slurmdbd, self.mariadb):
            if d is not None:
                d.stop(timeout=20)


def start_cluster(base: Path, name: str, munge: Munge, cgroup: bool = False) -> Cluster:
    if cgroup and not os.access("/sys/fs/cgroup/memory", os.W_OK):
        raise Unavailable(
            "no writable cgroup v1 memory hierarchy at /sys/fs/cgroup/memory: Slurm's"
            " task/cgroup cannot hold jobs to their memory here"
        )
    cluster = Cluster(base / name, name, munge, cgroup=cgroup)
    try:
        return cluster.start()
    except BaseException:
        cluster.stop()
        raise


def start_accounting_cluster(base: Path, name: str, munge: Munge) -> tuple[Accounting, Cluster]:
    """slurmdbd (with its MariaDB) and a cluster that stores its jobs there."""
    acct = Accounting(base / name, munge, name)
    cluster = Cluster(base / name, name, munge)
    try:
        acct.start()
        cluster.accounting_port = acct.dbd_port
        cluster.accounting = acct
        cluster.node = f"{name}n1"
        (cluster.dir / "log").mkdir(parents=True, exist_ok=True)
        # sacctmgr reads the accounting host and port from slurm.conf; write it early.
        cluster.ctld_port, cluster.slurmd_port = free_port(), free_port()
        cluster.conf.write_text(cluster.config_text())
        acct.add_cluster(cluster)
        cluster.start()
    except BaseException:
        cluster.stop()
        acct.stop()
        raise
    return acct, cluster
