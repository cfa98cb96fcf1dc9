"""launch/slurm/mesh.sbatch against a real Slurm: munged, slurmctld and a slurmd
per node, started by the test (tests/slurmcluster.py). With network namespaces
there are two nodes, each a host with its own address; without, one node on
loopback. A job trains a network across the job's nodes and its results are
checked against the numpy reference; a second job is cancelled after its first
epoch, and every mesh process of it, on every node, must end. Skips with the
reason when Slurm is missing or cannot start here. First, what a task reads from
its allocation, and the options `mesh up --slurm` refuses, without Slurm."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import slurm_train
from mesh import faults
from mesh.reference import ReferenceNet
from mesh.slurm import ADDRS_ENV, MEMORY_SHARE, MiB, memory_budget, worker_options
from slurmcluster import CannotStart, Cluster, gone, why_not

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "launch" / "slurm" / "mesh.sbatch"
MEMORY_MB, CPUS = 800, 2  # what each job asks for on every node
JOB_TIMEOUT = 300  # seconds: a bound against a hang, not a measure
STOP_TIMEOUT = 25  # seconds for every mesh process to end after scancel (Slurm would SIGKILL at KillWait=30)


def test_memory_budgets_read_as_slurm_writes_them():
    assert memory_budget({"SLURM_MEM_PER_NODE": "1000"}) == int(1000 * MiB * MEMORY_SHARE)
    assert memory_budget({"SLURM_MEM_PER_CPU": "100", "SLURM_CPUS_ON_NODE": "4"}) == int(400 * MiB * MEMORY_SHARE)
    assert memory_budget({"SLURM_CPUS_ON_NODE": "4"}) is None  # the job holds no memory: no budget


def test_a_task_becomes_a_worker_with_its_nodes_share():
    env = {"SLURMD_NODENAME": "c2", ADDRS_ENV: "c1=10.0.0.1,c2=c2.cluster", "SLURM_CPUS_ON_NODE": "8",
           "SLURM_MEM_PER_NODE": "2048"}
    assert worker_options(env) == ["--listen", "0.0.0.0", "--advertise", "c2.cluster", "--slots", "8",
                                   "--memory", str(int(2048 * MiB * MEMORY_SHARE))]
    mine = {**env, "MESH_WORKER_SLOTS": "3", "MESH_WORKER_MEMORY": "1GiB"}  # the user's, read by mesh worker
    assert worker_options(mine) == ["--listen", "0.0.0.0", "--advertise", "c2.cluster"]


@pytest.mark.parametrize("args, error", [
    (["python", "x.py"], "a command to run is for --slurm"),
    (["--slurm"], "--slurm needs the command to run"),
    (["--slurm", "--hosts", "README.md", "--bind", "tcp://0.0.0.0:5555", "x"], "--bind, --hosts: not for --slurm"),
    (["--slurm", "true"], "SLURM_JOB_ID is not set"),
])
def test_mesh_up_slurm_refuses_in_one_line(args, error):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    r = subprocess.run([sys.executable, "-m", "mesh", "up", *args], capture_output=True, text=True, timeout=60,
                       cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
    assert r.returncode != 0 and error in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if why_not() is not None:
        pytest.skip(f"Slurm test skipped: {why_not()}")
    try:
        c = Cluster(tmp_path_factory.mktemp("slurm"), nodes=2, cpus=CPUS, memory_mb=1024, kill_wait=30)
    except CannotStart as e:
        pytest.skip(str(e))
    yield c
    c.close()


def submit(cluster, tmp_path, epochs, *options, hold=False, env=None):
    """The batch script, as a user submits it, with the training command; (job id, output file, OUT prefix)."""
    work = tmp_path / "work"  # the job's working directory: its keys are made here
    work.mkdir()
    out = tmp_path / "result"
    env = {"PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
           "PYTHONUNBUFFERED": "1", **(env or {})}
    job = cluster.submit(f"--nodes={len(cluster.nodes)}", f"--cpus-per-task={CPUS}", f"--mem={MEMORY_MB}",
                         f"--output={tmp_path}/job-%j.out", f"--chdir={work}", *options, str(SCRIPT),
                         sys.executable, str(ROOT / "tests" / "slurm_train.py"), str(out), str(epochs),
                         *(["hold"] if hold else []), env=env)
    return job, tmp_path / f"job-{job}.out", out


def output(path):
    return path.read_text(errors="replace") if path.exists() else ""


def wait_for_line(cluster, job, path, line):
    """The job output once it holds `line` (polled; the deadline bounds a hang)."""
    deadline = time.monotonic() + JOB_TIMEOUT
    while line not in output(path):
        state = cluster.job(job).get("JobState")
        assert state in ("PENDING", "RUNNING", "CONFIGURING"), f"job {job} is {state}:\n{output(path)}"
        assert time.monotonic() < deadline, f"never printed {line!r}:\n{output(path)}\n{cluster.logs()}"
        time.sleep(0.1)


def mesh_pids(cluster, text):
    """Every mesh process of a job: the pids its output names (launcher, broker, srun, workers, groups),
    and each `mesh ...` process inside the node hosts' namespaces."""
    pids = {int(p) for p in re.findall(r"\bpid (\d+)", text)}
    for line in text.splitlines():
        if line.startswith("mesh pids: "):
            pids |= set(json.loads(line[len("mesh pids: "):]))
    for pid in cluster.namespace_pids():
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"mesh "):
                pids.add(pid)
        except OSError:
            pass
    return pids


def reference_run(first, epochs):
    X, Y = slurm_train.data()
    ref = ReferenceNet([(first[f"W{i}"], first[f"b{i}"]) for i in range(2)], dtype=np.float64,
                       optimizer="sgd", **slurm_train.SPEC)
    history = []
    for _ in range(epochs):
        history += ref.train(X, Y, epochs=1, **slurm_train.TRAIN)
    return ref, history, ref.forward(X)


@pytest.mark.timeout(600)
def assert_trained_like_the_reference(out, epochs):
    first, final = np.load(f"{out}-0.npz"), np.load(f"{out}-1.npz")
    ref, history, outputs = reference_run(first, epochs)
    np.testing.assert_allclose(final["history"], history, rtol=1e-9)
    for i, (W, b) in enumerate(ref.layers):
        np.testing.assert_allclose(final[f"W{i}"], W, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(final[f"b{i}"], b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(final["outputs"], outputs, rtol=1e-9, atol=1e-12)


def completed(cluster, job, log):
    """The job's output, once the job has ended COMPLETED."""
    state = cluster.wait_state(job, set(), JOB_TIMEOUT)
    text = output(log)
    assert state == "COMPLETED", f"job {job} {state}:\n{text}\n{cluster.logs()}"
    return text


def test_a_job_trains_across_its_nodes_like_the_reference_and_completes(cluster, tmp_path):
    epochs = 3
    job, log, out = submit(cluster, tmp_path, epochs)
    text = completed(cluster, job, log)

    info = json.loads(Path(f"{out}.json").read_text())
    hosts = sorted(w["host"] for w in info["workers"])
    assert hosts == sorted(cluster.addrs), info["workers"]  # one worker per node, at the node's address
    for w in info["workers"]:  # budgets follow the allocation: slots = CPUs, memory = a share of --mem
        assert w["slots"] == CPUS, w
        assert w["memory"]["budget"] == int(MEMORY_MB * MiB * MEMORY_SHARE), w
    if len(cluster.nodes) > 1:
        assert {p["host"] for p in info["processes"]} == set(cluster.addrs), info["processes"]
    assert info["refused_without_keys"], "the broker answered a client without keys"
    assert info["keys"] and not os.path.exists(info["keys"]), "the job's keys were not removed after it"

    assert_trained_like_the_reference(out, epochs)

    assert "dashboard: http://127.0.0.1:" in text and "ssh -L" in text, text
    assert "the command exited with code 0" in text and "the broker and every worker have ended" in text, text
    assert not gone(mesh_pids(cluster, text), STOP_TIMEOUT), "mesh processes outlived their job"


def running_mesh(cluster, job, log, line):
    """The pids of a job's mesh once its output holds `line`."""
    wait_for_line(cluster, job, log, line)
    pids = mesh_pids(cluster, output(log))
    assert len(pids) >= 4 + 2 * len(cluster.nodes), f"expected launcher, broker, srun, workers, groups: {pids}"
    return pids


def assert_stopped_by_slurm(cluster, job, log, pids, state, after):
    left = gone(pids, STOP_TIMEOUT)
    assert not left, f"still alive {STOP_TIMEOUT}s after {after}: {left}\n{output(log)}"
    assert cluster.wait_state(job, set(), JOB_TIMEOUT) == state
    text = output(log)  # whole: the launcher that wrote it has ended
    # Slurm signals the job's processes one by one: the launcher hears its own SIGTERM, or first
    # sees the command end of it
    assert "stopped by a signal" in text or "the command exited with code 143" in text, text
    assert "the broker and every worker have ended" in text, text
    assert not mesh_pids(cluster, ""), "a mesh process is left in a node's namespace"


@pytest.mark.timeout(600)
def test_a_cancelled_job_ends_every_mesh_process_on_every_node(cluster, tmp_path):
    job, log, _ = submit(cluster, tmp_path, 10 ** 6)  # trains until cancelled
    pids = running_mesh(cluster, job, log, "epoch 1 done")
    r = cluster.run("scancel", job)
    assert r.returncode == 0, r.stderr
    assert_stopped_by_slurm(cluster, job, log, pids, "CANCELLED", "scancel")


@pytest.mark.timeout(600)
def test_a_job_at_its_time_limit_ends_every_mesh_process_on_every_node(cluster, tmp_path):
    """One minute, Slurm's shortest limit; it acts on it within its next check (every 30 s)."""
    job, log, _ = submit(cluster, tmp_path, 1, "--time=1", hold=True)
    pids = running_mesh(cluster, job, log, "holding")
    assert cluster.wait_state(job, {"TIMEOUT"}, JOB_TIMEOUT) == "TIMEOUT"
    assert_stopped_by_slurm(cluster, job, log, pids, "TIMEOUT", "the time limit")


@pytest.mark.timeout(600)
def test_a_worker_lost_mid_training_leaves_the_job_running_and_the_mesh_heals(cluster, tmp_path):
    """The worker holding the output layer's group SIGKILLs itself right after step 7 (of 15): the
    other workers' tasks of the step go on (srun --no-kill), the broker rebuilds the lost groups on
    them, and the training ends as the reference's does."""
    if len(cluster.nodes) < 2:
        pytest.skip("one node: no other worker to heal on")
    faults_log = tmp_path / "faults.log"
    job, log, out = submit(cluster, tmp_path, 3, env={faults.ENV: "n1.2.0@step=7:worker",
                                                      faults.LOG_ENV: str(faults_log)})
    text = completed(cluster, job, log)
    assert [line.split(" pid ")[0] for line in faults.fired(faults_log)] == ["n1.2.0@step=7:worker after step 7"]
    assert "stopped answering heartbeats" in text, text  # the broker saw the worker go, and rebuilt its groups
    assert_trained_like_the_reference(out, 3)
    assert "the broker and every worker have ended" in text, text
