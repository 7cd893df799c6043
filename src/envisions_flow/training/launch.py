"""Running one rule's work as several processes: torchrun on one node, `srun` + torchrun across Slurm nodes.

A stage function starts with `if launch("module:itself", args, settings, workdir): return`
(stages.train does). When the job wants one process (the default, and always on
a machine without GPUs unless `training.processes_per_node` says otherwise),
`launch` returns False and the function does its work in place. When it wants
more, the arguments are pickled next to the output, `torchrun -m
envisions_flow.training.launch <spec>` starts the processes, and `launch` returns True
once they all finished. Each process calls the same function with RANK /
WORLD_SIZE set, where `launch` returns False, and the function decides what only
rank 0 does (training.train writes the checkpoint on rank 0 alone). The
processes' output is passed into the rule's log line by line. The rule's
script stays as it was (Snakemake re-runs a script rule's jobs when its script changes).

How many processes: `training.nodes` and `training.processes_per_node` when
set; otherwise the Slurm allocation's node count (SLURM_JOB_NUM_NODES or
SLURM_NNODES) and the GPUs this process sees (CUDA_VISIBLE_DEVICES narrows them).
Across nodes the rendezvous endpoint is the first host of
`scontrol show hostnames $SLURM_JOB_NODELIST`, at `training.master_port`.
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

log = logging.getLogger("envisions_flow.training.launch")

# Defaults live here, not in config/schema.yaml, so that the params (and so the results) of finished runs stay as
# they were: a key absent from the config means "as before".
DEFAULT_MASTER_PORT = 29500


class LaunchError(RuntimeError):
    """The processes could not be started, or one of them failed."""


@dataclass(frozen=True)
class Topology:
    """Nodes and processes per node that one rule's job runs on."""

    nodes: int = 1
    per_node: int = 1

    @property
    def world_size(self) -> int:
        return self.nodes * self.per_node


def inside_launch(env: Mapping[str, str] = os.environ) -> bool:
    """True in a process that torchrun started (it sets these in every rank)."""
    return "LOCAL_RANK" in env and "WORLD_SIZE" in env


def visible_gpus() -> int:
    """CUDA devices this process may use (CUDA_VISIBLE_DEVICES already narrows torch's count)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def topology(settings: Mapping[str, Any], env: Mapping[str, str] = os.environ, gpus: int | None = None) -> Topology:
    """How many nodes and processes per node the training settings and the allocation ask for."""
    nodes = settings.get("nodes") or env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 1
    per_node = settings.get("processes_per_node") or max(1, visible_gpus() if gpus is None else gpus)
    return Topology(int(nodes), int(per_node))


def slurm_hosts(nodelist: str) -> list[str]:
    """The host names of a Slurm node list (`node[01-03]` -> node01 node02 node03)."""
    try:
        done = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        raise LaunchError(f"cannot expand SLURM_JOB_NODELIST {nodelist!r} with scontrol: {error}") from None
    return done.stdout.split()


# What a nested srun keeps of the job step's environment: the allocation it runs in. The rest (SLURM_NTASKS=1,
# SLURM_NNODES, the step's GPUs and CPUs, SRUN_/SBATCH_ defaults) describes the one-task step the rule runs in
# and would override the nested srun's own request (one torchrun on one node instead of one per node).
SLURM_ALLOCATION = {"SLURM_JOB_ID", "SLURM_JOBID", "SLURM_JOB_NODELIST", "SLURM_NODELIST", "SLURM_JOB_NUM_NODES",
                    "SLURM_CLUSTER_NAME", "SLURM_SUBMIT_DIR", "SLURM_SUBMIT_HOST", "SLURM_CONF"}


def nested_srun_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment of the srun that starts one torchrun per node, the job step's own settings removed."""
    return {key: value for key, value in env.items()
            if not (key.startswith("SLURM_") and key not in SLURM_ALLOCATION) and not key.startswith(("SRUN_", "SBATCH_"))}


def command(topo: Topology, spec: Path, env: Mapping[str, str] = os.environ, port: int = DEFAULT_MASTER_PORT,
            hosts: Callable[[str], list[str]] = slurm_hosts, gpus_per_node: int = 0) -> list[str]:
    """The command line that starts `topo.world_size` processes running the pickled call in `spec`.

    Across nodes: `srun` with one task per node, each asking for the node's GPUs (`gpus_per_node`)
    and the job's cores per task; run it with `nested_srun_env`.
    """
    torchrun = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={topo.nodes}",
                f"--nproc-per-node={topo.per_node}"]
    entry = ["-m", "envisions_flow.training.launch", str(spec)]
    if topo.nodes == 1:
        return [*torchrun, "--standalone", *entry]  # a free local port: several jobs may share a node
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise LaunchError(f"training.nodes: {topo.nodes} nodes need a Slurm allocation (SLURM_JOB_NODELIST is unset)")
    names = hosts(nodelist)
    if len(names) < topo.nodes:
        raise LaunchError(f"training.nodes: {topo.nodes} nodes wanted, the allocation has {len(names)} ({nodelist})")
    rendezvous = ["--rdzv-backend=c10d", f"--rdzv-endpoint={names[0]}:{port}",
                  f"--rdzv-id={env.get('SLURM_JOB_ID', 'envisions-flow')}"]
    # one torchrun per node; --overlap lets the step share the resources of the job step it is started from,
    # --mem=0 gives it the job's memory on each node
    srun = ["srun", "--overlap", f"--nodes={topo.nodes}", f"--ntasks={topo.nodes}", "--ntasks-per-node=1",
            "--mem=0", "--kill-on-bad-exit=1"]
    if gpus_per_node:
        srun.append(f"--gpus-per-node={gpus_per_node}")
    if env.get("SLURM_CPUS_PER_TASK"):
        srun.append(f"--cpus-per-task={env['SLURM_CPUS_PER_TASK']}")
    return [*srun, *torchrun, *rendezvous, *entry]


def _resolve(function: str) -> Callable[..., Any]:
    module, name = function.split(":")
    return getattr(importlib.import_module(module), name)


def launch(function: str, args: Sequence[Any], settings: Mapping[str, Any], workdir: str | Path,
           env: Mapping[str, str] = os.environ) -> bool:
    """Run `function(*args)` in every process of a torchrun launch when more than one process is wanted.

    Returns True when it did (all processes finished well), False when the caller should do the work
    itself: one process is wanted, or this is already one of the launched processes. `function` is
    "module:name"; `workdir` is where the pickled call is kept while the processes run (on a file
    system all nodes see, e.g. the output's directory).
    """
    topo = topology(settings, env)
    if inside_launch(env) or topo.world_size == 1:
        return False
    Path(workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", dir=workdir, prefix=".launch-", suffix=".pickle", delete=False) as file:
        pickle.dump({"function": function, "args": list(args)}, file)
    spec = Path(file.name)
    try:
        argv = command(topo, spec, env, int(settings.get("master_port") or DEFAULT_MASTER_PORT),
                       gpus_per_node=visible_gpus())
        log.info("%s: %d process(es) on %d node(s): %s", function, topo.world_size, topo.nodes, shlex.join(argv))
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env={**(nested_srun_env(env) if topo.nodes > 1 else env), "PYTHONUNBUFFERED": "1"})
        assert process.stdout is not None
        for line in process.stdout:  # one writer for the rule's log: this process
            log.info("%s", line.rstrip("\n"))
        if process.wait():
            raise LaunchError(f"{function}: the {topo.world_size} training processes failed "
                              f"(exit status {process.returncode}); their output is above")
    finally:
        spec.unlink(missing_ok=True)
    return True


def main(argv: Sequence[str] | None = None) -> None:
    """One rank: load the pickled call and run it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=logging.INFO, format=f"rank {rank} %(name)s: %(message)s", stream=sys.stderr,
                        force=True)
    with open(argv[0], "rb") as file:
        spec = pickle.load(file)
    try:
        _resolve(spec["function"])(*spec["args"])
    except Exception:
        logging.getLogger("envisions_flow").exception("rank %s failed", rank)
        raise


if __name__ == "__main__":
    main()
