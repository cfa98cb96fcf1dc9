"""The `mesh` command, as a user runs it: real processes, ended in teardown."""
import os
import select
import signal
import subprocess
import sys

import pytest

from conftest import alive, all_gone, closed_port


def mesh_cmd(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "mesh", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


@pytest.fixture
def mesh_up():
    p = subprocess.Popen([sys.executable, "-m", "mesh", "up", "--bind", "tcp://127.0.0.1:*", "--workers", "2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0, stdin=subprocess.DEVNULL)
    try:
        ready, _, _ = select.select([p.stdout], [], [], 30)
        assert ready, "mesh up printed nothing within 30s"
        line = p.stdout.readline().decode()
        assert line.startswith("mesh up: broker tcp://127.0.0.1:"), line
        addr = line.split()[3]  # the port the broker bound: no port is picked and released before use
        yield p, addr
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        try:
            os.killpg(p.pid, signal.SIGKILL)  # anything of its group still there
        except ProcessLookupError:
            pass
        p.stdout.close()
        p.stderr.close()


def test_up_create_predict_status_and_ctrl_c(mesh_up):
    p, addr = mesh_up
    r = mesh_cmd("create", "5,5,1", "--group-size", "1", "--seed", "7", "--broker", addr)
    assert r.returncode == 0, r.stderr
    net = r.stdout.strip()
    assert net == "n1"
    r = mesh_cmd("predict", net, "0,1", "1,0", env={"MESH_BROKER": addr})
    assert r.returncode == 0, r.stderr
    outs = [float(v) for v in r.stdout.split()]
    assert len(outs) == 2 and all(0 < v < 1 for v in outs)
    r = mesh_cmd("status", "--broker", addr)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert sum(line.startswith("worker ") for line in lines) == 2
    group_lines = [line for line in lines if line.startswith("  n1.")]
    assert len(group_lines) == 11
    pids = [int(line.split(" pid ")[1].split()[0]) for line in group_lines]
    assert all(alive(pid) for pid in pids)
    # Ctrl-C on `mesh up` ends every process it started
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=15) == 0
    assert all_gone(pids)


def test_train_from_csv(mesh_up, tmp_path):
    _, addr = mesh_up
    csv = tmp_path / "xor.csv"
    csv.write_text("a,b,y\n" + "0,1,1\n1,0,0\n" * 8)
    net = mesh_cmd("create", "4,1", "--broker", addr).stdout.strip()
    r = mesh_cmd("train", net, str(csv), "--target", "y", "--epochs", "3", "--broker", addr)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("epoch") == 3


def test_user_mistakes_are_one_line_errors(mesh_up):
    _, addr = mesh_up
    r = mesh_cmd("predict", "n42", "0,1", "--broker", addr)
    assert r.returncode == 1
    assert "Error: unknown network 'n42'" in r.stderr and "Traceback" not in r.stderr
    r = mesh_cmd("create", "5,x,1", "--broker", addr)
    assert r.returncode == 2 and "expected sizes like 5,5,1" in r.stderr
    with closed_port() as port:
        r = mesh_cmd("status", "--broker", f"tcp://127.0.0.1:{port}", "--timeout", "0.2")
    assert r.returncode == 1 and "did not answer 'status'" in r.stderr


def test_every_option_has_an_environment_variable():
    r = mesh_cmd("worker", "--help")
    assert r.returncode == 0
    with closed_port() as port:
        r = mesh_cmd("status", env={"MESH_BROKER": f"tcp://127.0.0.1:{port}", "MESH_STATUS_TIMEOUT": "0.2"})
    assert r.returncode == 1 and "within 0.4s" in r.stderr


def test_up_with_an_unreachable_host_names_it(tmp_path):
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("# one host that does not exist\nno-such-host.invalid\n")
    r = mesh_cmd("up", "--hosts", str(hosts), "--advertise", "127.0.0.1", "--bind", "tcp://127.0.0.1:*",
                 timeout=60)
    assert r.returncode == 1
    assert "worker host no-such-host.invalid could not be reached" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.fixture
def started():
    """Start `mesh ...` processes, each in its own process group, all ended after the test."""
    procs = []

    def start(*args):
        p = subprocess.Popen([sys.executable, "-m", "mesh", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             process_group=0, stdin=subprocess.DEVNULL, text=True)
        procs.append(p)
        return p
    yield start
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
        p.stdout.close()
        p.stderr.close()


def read_until(p, text, seconds=30):
    """The lines p printed, up to and including the first that holds text."""
    seen = []
    while not (seen and text in seen[-1]):
        ready, _, _ = select.select([p.stdout], [], [], seconds)
        line = p.stdout.readline() if ready else ""
        assert line, f"no line with {text!r} within {seconds}s; got {seen}"
        seen.append(line)
    return seen


def test_worker_says_when_it_starts_registers_or_finds_no_broker(started):
    with closed_port() as port:
        lonely = started("worker", "--broker", f"tcp://127.0.0.1:{port}")
        lines = read_until(lonely, "no broker answers")  # after the heartbeat expiry, then it keeps trying
    assert lines[0].startswith("mesh worker: pid ") and f"joining the broker at tcp://127.0.0.1:{port}" in lines[0]
    broker = started("broker", "--bind", "tcp://127.0.0.1:*")
    addr = read_until(broker, "listening on")[-1].split()[-1]
    worker = started("worker", "--broker", addr)
    lines = read_until(worker, "registered")
    assert len(lines) == 2 and lines[1].strip() == f"mesh worker: registered with the broker at {addr}"
