"""`mesh up --slurm COMMAND...`: the mesh of one Slurm job, run by its batch script.

The broker starts here, on the job's first node; one worker per node, as the
tasks of one srun step (mesh/slurm.py); once every node's worker has joined,
COMMAND runs with MESH_BROKER and MESH_KEYS set. When COMMAND ends, or the job
is cancelled or reaches its time limit (Slurm sends SIGTERM to every process
of the job, this one included), COMMAND and every mesh process are ended and
the keys made for the job are removed. The exit code is COMMAND's."""
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit

from . import settings
from .localmesh import LocalMesh
from .security import generate, is_loopback
from .sizes import format_size
from .slurm import ADDRS_ENV, Job, NotInJob

START_TIMEOUT = 300.0  # seconds for every node's worker to join (srun may wait for a node's prolog)
STOP_TIMEOUT = 20.0  # seconds for COMMAND, then for the workers, to end after SIGTERM
STEP_NAME = "mesh-workers"
NOT_FOR_SLURM = ("bind", "workers", "hosts_file", "advertise", "ssh_cmd", "remote_command", "insecure", "standby")
SIGNALLED = 128 + signal.SIGTERM  # the exit code of a job stopped by Slurm, as a shell reports it


class SlurmMesh(LocalMesh):
    """A broker bound to every interface of this node, dialled at the node's Slurm address,
    and one worker per node started by srun (one process in this mesh's process group)."""

    def __init__(self, job, worker_args=(), **kw):
        super().__init__(workers=len(job.nodes), bind="tcp://0.0.0.0:*", start_timeout=START_TIMEOUT, **kw)
        self.job, self.worker_args = job, list(worker_args)
        self.env[ADDRS_ENV] = job.addrs_env()
        self.srun = None
        self.signalled = False  # this job was signalled by Slurm (scancel, the time limit)

    def _dial_address(self, bound):
        return f"tcp://{self.job.addrs[self.job.here]}:{bound.rsplit(':', 1)[1]}"

    def _start_workers(self):
        n = str(len(self.job.nodes))
        # --overlap: the user's own steps may share the nodes' CPUs and memory with the workers;
        # --no-kill, --kill-on-bad-exit=0: a lost node or worker leaves the others running (the mesh heals)
        cmd = ["srun", "--nodes", n, "--ntasks", n, "--ntasks-per-node", "1", "--overlap", "--no-kill",
               "--kill-on-bad-exit=0", "--input=none", "--label", "--job-name", STEP_NAME,
               sys.executable, "-m", "mesh.slurm", "--broker", self.address, *self.keys_args, *self.worker_args]
        self.srun = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL, process_group=self.pgid)
        self.procs.append(self.srun)

    def _wait_for_workers(self):
        deadline = time.monotonic() + self.start_timeout
        while len(self.client.status()["workers"]) < self.n_workers:
            if self.srun.poll() is not None:
                raise RuntimeError(f"srun, which runs the workers, exited with code {self.srun.returncode} "
                                   f"before every node's worker had joined (its messages are above)")
            if self.brokers[0].poll() is not None:
                raise RuntimeError(f"the broker exited with code {self.brokers[0].returncode} at start")
            if time.monotonic() > deadline:
                raise TimeoutError(f"only some of the {self.n_workers} nodes' workers joined within "
                                   f"{self.start_timeout:g}s")
            time.sleep(0.2)

    def stop(self):
        """The workers first: SIGTERM to every process of their step, through Slurm (srun itself
        would SIGKILL them on SIGTERM), and srun returns once all have ended; if they do not,
        srun's own termination. True when the workers ended in time; if not, Slurm ends what is
        left of their step with the job."""
        ended = True
        if self.srun is not None and self.srun.poll() is None:
            # after scancel or the time limit, Slurm has sent SIGTERM to the step's processes itself
            if not (self.signalled or self._signal_step()) or not self._srun_ends():
                self.srun.terminate()
                ended = self._srun_ends()
        super().stop()
        return ended

    def _signal_step(self):
        """SIGTERM to the workers' step (found by its name in squeue); False, said, when Slurm refuses
        (as it does once a node's share of the step has ended: a worker lost before)."""
        ok, out = _slurm("squeue", "--noheader", "--steps", "--jobs", self.job.id, "--format", "%i %j")
        step = next((f[0] for f in map(str.split, out.splitlines()) if f[1:] == [STEP_NAME]), None) if ok else None
        if step:
            ok, why = _slurm("scancel", "--signal=TERM", step)
        else:
            ok, why = False, f"squeue lists no step named {STEP_NAME}" if ok else out
        if not ok:
            print(f"mesh up --slurm: could not signal the workers' step ({why}); srun ends it instead",
                  file=sys.stderr, flush=True)
        return ok

    def _srun_ends(self):
        try:
            self.srun.wait(STOP_TIMEOUT)
            return True
        except subprocess.TimeoutExpired:
            return False


def _slurm(*cmd):
    """(True, output) of a Slurm command, or (False, why it failed)."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=STOP_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    return (True, r.stdout) if r.returncode == 0 else (False, r.stderr.strip() or f"exit code {r.returncode}")


def up_slurm(ctx, command, say, **options):
    """`mesh up --slurm COMMAND`: the options that do not apply refused, a failure in one line."""
    from click import ClickException, UsageError
    from click.core import ParameterSource
    if not ctx.params["slurm"]:
        raise UsageError(f"unexpected argument {command[0]!r}: a command to run is for --slurm")
    if not command:
        raise UsageError("--slurm needs the command to run in the job's mesh, e.g. python train.py")
    other = [p.opts[0] for p in ctx.command.params if p.name in NOT_FOR_SLURM
             and ctx.get_parameter_source(p.name) == ParameterSource.COMMANDLINE]
    if other:
        raise UsageError(f"{', '.join(other)}: not for --slurm (the job's nodes are the workers, the keys are "
                         f"always on)")
    try:
        return run(list(command), say=say, **options)
    except NotInJob as e:
        raise ClickException(str(e)) from None
    except (RuntimeError, TimeoutError) as e:
        raise ClickException(f"the job's mesh did not start: {e}") from None


def run(command, keys_dir=None, dashboard=None, dashboard_token=None, blas_threads=1, slots=None,
        worker_memory=None, say=print):
    """Run the job's mesh and COMMAND in it; COMMAND's exit code."""
    job = Job.from_env()
    made = None
    if not keys_dir:  # the working directory: the job's nodes see it, as they see its output
        keys_dir = made = os.path.abspath(f"mesh-keys-{job.id}")
        generate(made)
    worker_args = ["--blas-threads", str(blas_threads)] + (["--slots", str(slots)] if slots else []) + \
        (["--memory", str(worker_memory)] if worker_memory else [])
    # the dashboard listens on this node's loopback, which every user of the node can reach: a token always
    mesh = SlurmMesh(job, worker_args, blas_threads=blas_threads, dashboard=dashboard, keys=keys_dir,
                     dashboard_token=dashboard_token or secrets.token_urlsafe(18))
    say(f"mesh up --slurm: job {job.id} on {_count(len(job.nodes), 'node')} ({', '.join(job.nodes)}), "
        f"pid {os.getpid()}; keys {keys_dir}" + (" (made for this job, removed when it ends)" if made else ""))
    code = SIGNALLED
    try:
        client = mesh.start()
        for line in _summary(job, mesh, client.status()):
            say(line)
        env = {**os.environ, settings.BROKER: mesh.address, settings.KEYS: keys_dir}
        say(f"mesh up --slurm: running {' '.join(command)} with MESH_BROKER={mesh.address}")
        code = _run_command(command, env)
        say(f"mesh up --slurm: the command exited with code {code}; stopping the mesh")
    except KeyboardInterrupt:  # SIGTERM: scancel, or the time limit
        mesh.signalled = True
        say("mesh up --slurm: stopped by a signal (job cancelled or at its time limit); stopping the mesh")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the cleanup runs to its end, whatever comes meanwhile
        ended = mesh.stop()
        if made:
            shutil.rmtree(made, ignore_errors=True)
    say("mesh up --slurm: the broker and every worker have ended" if ended else
        f"mesh up --slurm: the workers did not end within {STOP_TIMEOUT:g}s; Slurm ends them with the job")
    return code


def _run_command(command, env):
    """COMMAND in a process group of its own; on a signal here, it and whatever it started are ended."""
    try:
        proc = subprocess.Popen(command, env=env, process_group=0)
    except OSError as e:
        print(f"mesh up --slurm: cannot run {command[0]}: {e.strerror}", file=sys.stderr, flush=True)
        return 127
    try:
        code = proc.wait()
    finally:
        if proc.poll() is None:
            _end_group(proc)
    return 128 - code if code < 0 else code


def _end_group(proc):
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            pass


def _summary(job, mesh, status):
    """What the job output says once the mesh is up: the broker, each node's worker, the dashboard."""
    node_of = {addr: node for node, addr in job.addrs.items()}
    yield f"mesh up --slurm: broker {mesh.address} on {job.here} (pid {mesh.brokers[0].pid}); " \
          f"{_count(len(status['workers']), 'worker')} joined (srun pid {mesh.srun.pid})"
    for w in sorted(status["workers"], key=lambda w: w["name"]):
        memory = (w.get("memory") or {}).get("budget")
        budget = f"memory budget {format_size(memory)}" if memory else "no memory budget"
        yield f"  worker {w['name']} on {node_of.get(w['host'], w['host'])} ({w['host']}): pid {w['pid']}, " \
              f"{w['slots']} slots, {budget}"
    if mesh.dashboard_url:
        where = urlsplit(mesh.dashboard_url)
        hint = f"; from your machine: ssh -L {where.port}:127.0.0.1:{where.port} {job.here}, then open it" \
            if is_loopback(f"tcp://{where.hostname}:{where.port}") else ""
        yield f"dashboard: {mesh.dashboard_url} on {job.here}{hint}"


def _count(n, noun):
    return f"{n} {noun}{'' if n == 1 else 's'}"
