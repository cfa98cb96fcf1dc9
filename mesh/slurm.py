"""What a Slurm job gave the mesh, read from the job's environment and
`scontrol`: its nodes and the address each is reached at, the CPUs and the
memory it holds on each. And the worker each node runs: `python -m mesh.slurm`
is the one task per node that `mesh up --slurm` starts with srun; it turns its
node's share of the allocation into `mesh worker` options and becomes that
worker (exec, so the process Slurm tracks is the worker itself)."""
import os
import subprocess
import sys
from dataclasses import dataclass

from . import settings
from .sizes import MiB

MEMORY_SHARE = 0.9  # of a node's allocation: the budget the broker plans with, under the cap Slurm enforces
ADDRS_ENV = settings.SLURM_NODE_ADDRS  # name=addr,... handed from the launcher to the tasks


class NotInJob(RuntimeError):
    """Not inside a Slurm job's allocation, or a job this cannot read; says which."""


def memory_budget(env):
    """Bytes a worker may plan for on this node: MEMORY_SHARE of the job's memory here
    (--mem, or --mem-per-cpu times its CPUs here); None when the job holds no memory."""
    per_node = env.get("SLURM_MEM_PER_NODE")
    if per_node:
        mb = int(per_node)
    elif env.get("SLURM_MEM_PER_CPU") and env.get("SLURM_CPUS_ON_NODE"):
        mb = int(env["SLURM_MEM_PER_CPU"]) * int(env["SLURM_CPUS_ON_NODE"])
    else:
        return None
    return int(mb * MiB * MEMORY_SHARE) if mb > 0 else None


def _scontrol(*args):
    r = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise NotInJob(f"scontrol {' '.join(args)} failed: {r.stderr.strip() or r.returncode}")
    return r.stdout


def node_addresses(names):
    """{node: the address Slurm itself reaches it at (NodeAddr)}, from one `scontrol show node`."""
    addrs = {}
    for line in _scontrol("show", "node", "-o", ",".join(names)).splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "NodeName" in fields:
            addrs[fields["NodeName"]] = fields.get("NodeAddr") or fields["NodeName"]
    return {n: addrs.get(n, n) for n in names}


@dataclass
class Job:
    id: str
    here: str        # the node this process runs on: the broker's
    nodes: list      # every node of the job, in Slurm's order
    addrs: dict      # node -> address the others reach it at

    @classmethod
    def from_env(cls, env=None):
        env = settings.environ() if env is None else env
        job_id, here = env.get("SLURM_JOB_ID"), env.get("SLURMD_NODENAME")
        if not job_id:
            raise NotInJob("--slurm runs inside a Slurm job (the batch script of sbatch): SLURM_JOB_ID is not set")
        if not here:
            raise NotInJob("--slurm runs on a node of the job (as its batch script does): SLURMD_NODENAME is "
                           "not set, so this is not one of the job's nodes")
        nodes = _scontrol("show", "hostnames", env["SLURM_JOB_NODELIST"]).split()
        if here not in nodes:
            raise NotInJob(f"this node, {here}, is not one of job {job_id}'s nodes ({', '.join(nodes)})")
        return cls(job_id, here, nodes, node_addresses(nodes))

    def addrs_env(self):
        return ",".join(f"{n}={a}" for n, a in self.addrs.items())


def worker_options(env):
    """The `mesh worker` options of this node's task: slots from its CPUs, a budget from its
    memory (unless given already), and the node's address to advertise."""
    opts = ["--listen", "0.0.0.0"]
    addrs = dict(pair.split("=", 1) for pair in env.get(ADDRS_ENV, "").split(",") if "=" in pair)
    here = env.get("SLURMD_NODENAME")
    if here in addrs:
        opts += ["--advertise", addrs[here]]
    if env.get("SLURM_CPUS_ON_NODE") and not env.get("MESH_WORKER_SLOTS"):
        opts += ["--slots", env["SLURM_CPUS_ON_NODE"]]
    budget = None if env.get("MESH_WORKER_MEMORY") else memory_budget(env)
    if budget:
        opts += ["--memory", str(budget)]
    return opts


def main(argv):
    """The srun task: become `mesh worker` with this node's options, then ARGV (which win)."""
    args = [sys.executable, "-m", "mesh", "worker", *worker_options(settings.environ()), *argv]
    os.execv(sys.executable, args)


if __name__ == "__main__":
    main(sys.argv[1:])
