"""A real single-node Slurm cluster on loopback, for tests: munged, slurmctld and slurmd from Debian's
`munge` and `slurm-wlm` packages, with a generated key and slurm.conf in a temporary directory.

It needs root (slurmd starts jobs as their user) and no cgroups: processes are tracked by walking
/proc (proctrack/linuxproc), tasks are not bound (task/none), there is no accounting (no slurmdbd,
so no `sacct`: `squeue --states=all` reports finished jobs while they are younger than MinJobAge).

    with SlurmCluster() as cluster:
        subprocess.run(["sbatch", "--wrap", "hostname"], env=cluster.env)

Every daemon is stopped (and every job cancelled) on leaving the block, also after an error.
From a shell, `python tests/slurm/cluster.py -- COMMAND...` runs COMMAND against a fresh cluster.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")


def missing_programs() -> list[str]:
    """The programs a cluster needs that are not installed (`apt-get install slurm-wlm munge`)."""
    programs = [*DAEMONS, "sbatch", "squeue", "sinfo", "scancel", "srun"]
    return [name for name in programs if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]


def _program(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def node_hardware() -> dict[str, str]:
    """CPUs, sockets, cores, threads and RealMemory of this machine, as slurmd itself sees them."""
    output = subprocess.run([_program("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"(\w+)=(\S+)", output.splitlines()[0]))
    keys = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    return {key: fields[key] for key in keys}


class SlurmCluster:
    """munged + slurmctld + slurmd for one node, `localhost`, in one partition (the default)."""

    def __init__(self, partition: str = "envisions-test", min_job_age: int = 3600):
        self.partition = partition
        self.min_job_age = min_job_age
        self.directory: Path | None = None
        self.processes: dict[str, subprocess.Popen] = {}
        self.env: dict[str, str] = {}

    # ---- start -----------------------------------------------------------------------------------

    def __enter__(self) -> "SlurmCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        missing = missing_programs()
        if missing:
            raise RuntimeError(f"not installed: {missing} (apt-get install slurm-wlm munge)")
        # munged refuses a socket in a directory that not everybody can traverse, so no pytest tmp_path
        # (its parents are 0700); and a Unix socket path must stay under 108 bytes
        self.directory = Path(tempfile.mkdtemp(prefix="envisions-slurm-", dir="/tmp"))
        self.directory.chmod(0o755)
        for name, mode in (("etc", 0o700), ("run", 0o755), ("state", 0o700), ("spool", 0o755), ("log", 0o755)):
            (self.directory / name).mkdir(mode=mode)
        (self.directory / "spool" / "localhost").mkdir()
        key = self.directory / "etc" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        conf = self.directory / "slurm.conf"
        conf.write_text(self.slurm_conf())
        self.env = {key: value for key, value in os.environ.items()
                    if not key.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
        self.env["SLURM_CONF"] = str(conf)
        # A real node finds its slurm.conf at /etc/slurm/slurm.conf; this cluster's is found through
        # SLURM_CONF only. Snakemake's jobstep executor starts each job with `srun` and strips every
        # SLURM_* variable from srun's environment, SLURM_CONF included, so put srun first in PATH
        # behind a two-line wrapper that sets it again (and leave /etc alone).
        shim = self.directory / "bin"
        shim.mkdir(mode=0o755)
        (shim / "srun").write_text(f'#!/bin/sh\nSLURM_CONF={conf} exec {_program("srun")} "$@"\n')
        (shim / "srun").chmod(0o755)
        self.env["PATH"] = f"{shim}{os.pathsep}{self.env.get('PATH', '')}"

        d = self.directory
        self._spawn("munged", [_program("munged"), "--foreground", f"--socket={d}/run/munge.socket",
                               f"--key-file={key}", f"--log-file={d}/log/munged.log",
                               f"--pid-file={d}/run/munged.pid", f"--seed-file={d}/etc/munged.seed"])
        self._wait_for(lambda: (d / "run" / "munge.socket").exists(), "munged to open its socket")
        self._spawn("slurmctld", [_program("slurmctld"), "-D", "-f", str(conf)])
        self._spawn("slurmd", [_program("slurmd"), "-D", "-N", "localhost", "-f", str(conf)])
        self._wait_for(self._node_idle, "the node to register idle")

    def slurm_conf(self) -> str:
        d = self.directory
        hardware = " ".join(f"{key}={value}" for key, value in node_hardware().items())
        return f"""# generated by tests/slurm/cluster.py: one node on loopback, no cgroups, no accounting
ClusterName=envisions
SlurmctldHost=localhost
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={d}/run/munge.socket
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
# no cgroups: track a job's processes through /proc, do not bind tasks to cores
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
# cores and memory are consumable: --cpus-per-task and --mem are checked against the node
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/builtin
ReturnToService=2
# finished jobs stay visible to `squeue --states=all` this long (there is no sacct)
MinJobAge={self.min_job_age}
NodeName=localhost NodeAddr=127.0.0.1 {hardware} State=UNKNOWN
PartitionName={self.partition} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""

    def _spawn(self, name: str, command: list[str]) -> None:
        out = open(self.directory / "log" / f"{name}.out", "w")
        # its own session: a signal to the test's process group does not reach it, stop() does
        self.processes[name] = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                                start_new_session=True)
        out.close()

    def _wait_for(self, condition, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode} while waiting for {what}:\n"
                                       f"{self.log_tail()}")
            if condition():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for {what}:\n{self.log_tail()}")

    def _node_idle(self) -> bool:
        result = subprocess.run(["sinfo", "--noheader", "--nodes=localhost", "--format=%T"], env=self.env,
                                capture_output=True, text=True)
        return result.returncode == 0 and result.stdout.strip() == "idle"

    # ---- use -------------------------------------------------------------------------------------

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """A Slurm client command (squeue, sinfo, scontrol, ...) against this cluster."""
        return subprocess.run(command, env=self.env, capture_output=True, text=True, check=check, timeout=60)

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld still knows (finished ones for MinJobAge seconds), as squeue shows them:
        id, name, state, partition, cpus, memory (`8000M`), time limit (`4:00:00`) and comment."""
        fields = ("id", "name", "state", "partition", "cpus", "memory", "time_limit", "comment")
        output = self.run("squeue", "--states=all", "--noheader", "--format=%i|%j|%T|%P|%C|%m|%l|%k").stdout
        return [dict(zip(fields, line.split("|", len(fields) - 1))) for line in output.splitlines() if line.strip()]

    def log_tail(self, lines: int = 30) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log", *(f"{n}.out" for n in DAEMONS)):
            path = self.directory / "log" / name if self.directory else None
            if path and path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {name}\n" + "\n".join(text))
        return "\n".join(parts)

    def slurmctld_log(self) -> str:
        path = self.directory / "log" / "slurmctld.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ---- stop ------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Cancel every job (slurmd kills their processes), then stop the daemons and delete the directory."""
        if self.processes.get("slurmctld") and self.processes["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", f"--partition={self.partition}"], env=self.env,
                           capture_output=True, timeout=30)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                running = subprocess.run(["squeue", "--noheader", "--format=%i", "--states=PENDING,RUNNING,"
                                          "COMPLETING,CONFIGURING,SUSPENDED"], env=self.env, capture_output=True,
                                         text=True, timeout=30)
                if running.returncode != 0 or not running.stdout.strip():
                    break
                time.sleep(0.5)
        for name in reversed(DAEMONS):  # slurmd, slurmctld, then munged
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


if __name__ == "__main__":
    # python tests/slurm/cluster.py -- snakemake --profile profiles/slurm ...
    arguments = sys.argv[1:]
    if arguments[:1] == ["--"]:
        arguments = arguments[1:]
    with SlurmCluster() as cluster:
        print(f"Slurm is up: SLURM_CONF={cluster.env['SLURM_CONF']}, partition {cluster.partition}", file=sys.stderr)
        status = subprocess.run(arguments or ["sinfo"], env=cluster.env).returncode
    sys.exit(status)
