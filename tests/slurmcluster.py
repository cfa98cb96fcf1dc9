"""A real Slurm cluster made by a test, from Debian's slurm-wlm and munge.

munged, slurmctld and one slurmd per node run in the foreground, started here
with a slurm.conf written here; their state, logs, pid files, the munge key
and socket all live in the test's folder. With network namespaces (netns.py)
each node is a host of its own with its own address, and the controller sits
on the hub; without, there is one node, on loopback. close() cancels the
cluster's jobs, ends every daemon by its pid (then its process group), and
removes the namespaces with whatever is left inside them."""
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from conftest import alive, end_process_group
from mesh.localmesh import _free_ports as free_ports
from netns import Hosts, can_make_namespaces

TOOLS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "squeue", "scancel")
START_TIMEOUT = 60  # seconds for the daemons to come up (a bound against a hang)
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE"}


class CannotStart(RuntimeError):
    """Slurm is missing or would not start here: the reason, with its log."""


def why_not():
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"Slurm or munge is not installed ({', '.join(missing)} missing; .ci/run installs slurm-wlm and munge)"
    if os.geteuid() != 0:
        return "the Slurm daemons need root"
    return None


class Cluster:
    def __init__(self, root, nodes=2, cpus=2, memory_mb=1024, kill_wait=30, namespaces=True):
        self.root = Path(root)
        self.hosts = Hosts(nodes) if namespaces and can_make_namespaces() is None else None
        self.nodes = [f"n{i + 1}" for i in range(nodes if self.hosts else 1)]
        self.addrs = self.hosts.addrs[1:] if self.hosts else ["127.0.0.1"]
        self.daemons = []  # (name, Popen)
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        try:
            self._write(cpus, memory_mb, kill_wait)
            self._start()
        except BaseException:
            self.close()
            raise

    def _write(self, cpus, memory_mb, kill_wait):
        r = self.root
        for d in ("munge", "state", "log", *(f"spool/{n}" for n in self.nodes)):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o700)
        ctl = self.hosts.addrs[0] if self.hosts else "127.0.0.1"
        ctl_port, node_port = free_ports(2)
        nodes = "\n".join(f"NodeName={n} NodeAddr={a} NodeHostname={n} CPUs={cpus} RealMemory={memory_mb}"
                          f" State=UNKNOWN" for n, a in zip(self.nodes, self.addrs))
        self.conf.write_text(f"""\
ClusterName=meshtest
SlurmctldHost={socket.gethostname()}({ctl})
SlurmctldPort={ctl_port}
SlurmdPort={node_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r}/munge/socket
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.%n.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.%n.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={r}/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
KillWait={kill_wait}
MailProg=/bin/true
{nodes}
PartitionName=mesh Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def _daemon(self, name, host, *cmd):
        log = open(self.root / "log" / f"{name}.out", "wb")
        p = subprocess.Popen([*self.on(host), *cmd], env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT, process_group=0)
        log.close()
        self.daemons.append((name, p))
        return p

    def on(self, host):
        """The prefix that runs a command on host i (None: here). nsenter, not `ip netns exec`: that
        one mounts a fresh /sys, without the cgroup file systems slurmd looks for."""
        if not self.hosts or host is None:
            return []
        return ["nsenter", f"--net=/run/netns/{self.hosts.names[host]}"]

    def _start(self):
        m = self.root / "munge"
        run(["mungekey", "--create", "--keyfile", str(m / "key")])
        os.chmod(m / "key", 0o400)
        self._daemon("munged", None, "munged", "--foreground", "--force", f"--socket={m}/socket",
                     f"--key-file={m}/key", f"--pid-file={m}/pid", f"--log-file={m}/log", f"--seed-file={m}/seed")
        self._until(lambda: (m / "socket").exists(), "munged made its socket")
        self._daemon("slurmctld", 0, "slurmctld", "-D", "-i", "-f", str(self.conf))
        self._until(lambda: "UP" in self.run("scontrol", "ping").stdout, "slurmctld answered scontrol ping")
        for i, n in enumerate(self.nodes, 1):
            self._daemon(f"slurmd.{n}", i, "slurmd", "-D", "-N", n, "-f", str(self.conf))
        self._until(lambda: self.idle() == len(self.nodes), "every node is idle")

    def _until(self, check, what):
        deadline = time.monotonic() + START_TIMEOUT
        while not check():
            dead = [(name, p.returncode) for name, p in self.daemons if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = f"{dead[0][0]} exited with code {dead[0][1]}" if dead else f"not within {START_TIMEOUT}s"
                raise CannotStart(f"Slurm did not start here: never {what} ({why})\n{self.logs()}")
            time.sleep(0.1)

    def idle(self):
        out = self.run("sinfo", "-h", "-N", "-o", "%N %T").stdout.split()
        return sum(1 for state in out[1::2] if state == "idle")

    def logs(self, lines=15):
        text = []
        for f in sorted((self.root / "log").glob("*")) + [self.root / "munge" / "log"]:
            if f.exists():
                tail = f.read_text(errors="replace").splitlines()[-lines:]
                text.append(f"--- {f.name}\n" + "\n".join(tail))
        return "\n".join(text)

    def run(self, *cmd, timeout=60, env=None):
        """A Slurm command on the controller's host."""
        return subprocess.run([*self.on(0), *cmd], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env={**self.env, **(env or {})})

    def submit(self, *args, env=None):
        r = self.run("sbatch", "--parsable", *args, env=env)
        assert r.returncode == 0, f"sbatch failed: {r.stderr}"
        return r.stdout.strip().split(";")[0]

    def job(self, job_id):
        """{field: value} of `scontrol show job`, or of the job's record in the jobcomp file once
        the controller has forgotten it."""
        r = self.run("scontrol", "show", "job", "-o", job_id)
        if r.returncode == 0 and r.stdout.strip():
            return dict(f.split("=", 1) for f in r.stdout.split() if "=" in f)
        comp = self.root / "jobcomp.txt"
        for line in comp.read_text().splitlines() if comp.exists() else []:
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            if fields.get("JobId") == job_id:
                return fields
        return {}

    def wait_state(self, job_id, states, seconds):
        """The job's state once it is one of `states` (or final); polled, the deadline bounds a hang."""
        deadline = time.monotonic() + seconds
        while True:
            state = self.job(job_id).get("JobState", "")
            if state in states or state in FINAL:
                return state
            assert time.monotonic() < deadline, f"job {job_id} still {state or 'unknown'} after {seconds}s\n" \
                                                f"{self.logs()}"
            time.sleep(0.2)

    def namespace_pids(self):
        """Every process inside the node hosts' namespaces (none without namespaces)."""
        if not self.hosts:
            return []
        pids = []
        for name in self.hosts.names[1:]:
            r = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
            pids += [int(p) for p in r.stdout.split()]
        return pids

    def close(self):
        try:
            if any(name == "slurmctld" and p.poll() is None for name, p in self.daemons):
                self.run("scancel", "--user", "root", timeout=30)
                deadline = time.monotonic() + 60
                while self.run("squeue", "-h", timeout=30).stdout.strip() and time.monotonic() < deadline:
                    time.sleep(0.2)
        finally:
            for name, p in reversed(self.daemons):  # slurmds, then the controller, then munged
                end(p)
            if self.hosts:
                self.hosts.close()  # and whatever is left in the namespaces


def end(p, seconds=10):
    """SIGTERM to the daemon by its pid, a bounded wait, then SIGKILL to what is left of its process group."""
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(seconds)
        except subprocess.TimeoutExpired:
            pass
    end_process_group(p)


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise CannotStart(f"{' '.join(cmd)} failed: {r.stderr.strip()}")


def gone(pids, seconds):
    """The pids still alive after waiting up to `seconds` for all of them to end."""
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if alive(p)]
