"""The `mesh` command, as a user runs it: real processes, ended in teardown."""
import os
import select
import signal
import subprocess
import sys

import pytest

from conftest import alive, all_gone, closed_port, end_process_group


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
        end_process_group(p)


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
    assert "2 workers on 1 hosts, 11 group processes" in r.stdout
    assert "network n1: ready; sizes [5, 5, 1], 2 inputs, 11 groups (11 alive)" in r.stdout, r.stdout
    assert "  n1." not in r.stdout  # processes only with --groups
    r = mesh_cmd("status", "--groups", "--broker", addr)
    lines = r.stdout.splitlines()
    assert sum(line.startswith("  worker ") for line in lines) == 2
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
    assert r.returncode == 2 and r.stderr.startswith("Error: Invalid value for 'SIZES': expected whole numbers")
    assert len(r.stderr.splitlines()) == 1
    with closed_port() as port:
        r = mesh_cmd("status", "--broker", f"tcp://127.0.0.1:{port}", "--timeout", "0.2")
    assert r.returncode == 1 and "did not answer 'status'" in r.stderr


def test_up_with_keys_gives_them_to_every_process_it_starts(tmp_path):
    """`mesh up --keys DIR`, with no MESH_KEYS in its environment: the broker, the workers and
    the groups they fork all use the keys (the broker could not reach a group without them),
    and a client needs them too."""
    keys = str(tmp_path / "keys")
    assert mesh_cmd("keys", "generate", keys).returncode == 0
    plain = {k: v for k, v in os.environ.items() if k != "MESH_KEYS"}
    p = subprocess.Popen([sys.executable, "-m", "mesh", "up", "--bind", "tcp://127.0.0.1:*", "--workers", "1",
                          "--keys", keys, "--dashboard", "off"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         process_group=0, stdin=subprocess.DEVNULL, env=plain)
    try:
        ready, _, _ = select.select([p.stdout], [], [], 30)
        assert ready, "mesh up printed nothing within 30s"
        addr = p.stdout.readline().decode().split()[3]
        net = mesh_cmd("create", "3,1", "--broker", addr, env={"MESH_KEYS": keys})
        assert net.returncode == 0, net.stderr
        r = mesh_cmd("predict", net.stdout.strip(), "0,1", "--broker", addr, env={"MESH_KEYS": keys})
        assert r.returncode == 0 and 0 < float(r.stdout) < 1, r.stderr
        r = subprocess.run([sys.executable, "-m", "mesh", "status", "--broker", addr, "--timeout", "1"],
                           capture_output=True, text=True, timeout=60, env=plain, stdin=subprocess.DEVNULL)
        assert r.returncode == 1 and "set MESH_KEYS to a folder with client keys" in r.stderr, r.stderr
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=15) == 0
    finally:
        end_process_group(p)

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


def write_people(path, rows, seed, reorder=False):
    """A user's CSV: a text target, numbers of very different ranges, a factor, missing cells."""
    import numpy as np
    rng = np.random.default_rng(seed)
    lines = ["age,city,income,label"] if not reorder else ["label,income,age,city"]
    for i in range(rows):
        age, city, income = rng.integers(18, 90), rng.choice(["Paris", "Lyon", "Nice"]), rng.uniform(1e4, 2e5)
        label = "rich" if income > 1e5 or city == "Nice" else "modest"
        cells = [str(age), city if i % 11 else "", f"{income:.0f}", label]
        lines.append(",".join(cells if not reorder else [cells[3], cells[2], cells[0], cells[1]]))
    path.write_text("\n".join(lines) + "\n")


def test_train_learns_a_text_target_and_predict_prints_classes(mesh_up, tmp_path):
    _, addr = mesh_up
    write_people(tmp_path / "train.csv", 300, seed=1)
    write_people(tmp_path / "test.csv", 60, seed=2, reorder=True)  # columns by name, target included
    net = mesh_cmd("create", "16,2", "--output", "softmax", "--loss", "cross_entropy", "--broker", addr).stdout.strip()
    r = mesh_cmd("train", net, str(tmp_path / "train.csv"), "--target", "label", "--epochs", "40",
                 "--optimizer", "adam", "--learning-rate", "0.01", "--broker", addr)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("epoch") == 40 and "\x1b" not in r.stdout + r.stderr
    r = mesh_cmd("predict", net, "--csv", str(tmp_path / "test.csv"), "--broker", addr)
    assert r.returncode == 0, r.stderr
    truth = [line.split(",")[0] for line in (tmp_path / "test.csv").read_text().splitlines()[1:]]
    got = r.stdout.split()
    assert set(got) <= {"rich", "modest"} and sum(a == b for a, b in zip(got, truth)) >= 0.85 * len(truth)
    # the same scaling is applied to rows typed by hand; a text age is refused unless asked
    assert mesh_cmd("predict", net, "30,Nice,50000", "--broker", addr).stdout.split() == ["rich"]
    r = mesh_cmd("predict", net, "old,Nice,50000", "--broker", addr)
    assert r.returncode == 1 and r.stderr.startswith("Error: row 0, position 0: 'old' is text")
    assert mesh_cmd("predict", net, "old,Nice,50000", "--allow-new-kinds", "--broker", addr).returncode == 0
    # one sigmoid output learns two classes too; a linear output standardises a number target
    net1 = mesh_cmd("create", "8,1", "--broker", addr).stdout.strip()
    assert mesh_cmd("train", net1, str(tmp_path / "train.csv"), "--target", "label", "--broker", addr).returncode == 0
    assert set(mesh_cmd("predict", net1, "30,Nice,50000", "--broker", addr).stdout.split()) <= {"rich", "modest"}
    net2 = mesh_cmd("create", "8,1", "--output", "linear", "--broker", addr).stdout.strip()
    r = mesh_cmd("train", net2, str(tmp_path / "train.csv"), "--target", "income", "--broker", addr)
    assert r.returncode == 0, r.stderr
    assert 1e3 < float(mesh_cmd("predict", net2, "30,Nice,rich", "--broker", addr).stdout) < 1e6


def test_save_load_and_checkpoints_from_the_command_line(mesh_up, tmp_path):
    _, addr = mesh_up
    write_people(tmp_path / "train.csv", 50, seed=3)
    net = mesh_cmd("create", "4,1", "--broker", addr).stdout.strip()
    r = mesh_cmd("train", net, str(tmp_path / "train.csv"), "--target", "label", "--epochs", "2", "--micro-batches",
                 "2", "--checkpoint-every", "1", "--checkpoint-name", "people.npz", "--broker", addr)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1].startswith("checkpoint: ") and "people.npz" in r.stdout
    r = mesh_cmd("save", net, str(tmp_path / "people.npz"), "--broker", addr)
    assert r.returncode == 0, r.stderr
    loaded = mesh_cmd("load", str(tmp_path / "people.npz"), "--broker", addr).stdout.strip()
    assert loaded != net
    same = [mesh_cmd("predict", n, "30,Nice,50000", "20,,1000", "--outputs", "--broker", addr).stdout
            for n in (net, loaded)]
    assert same[0] == same[1] and len(same[0].split()) == 2


def test_user_mistakes_in_data_and_options_are_one_line_errors(mesh_up, tmp_path):
    _, addr = mesh_up
    net = mesh_cmd("create", "4,1", "--broker", addr).stdout.strip()
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "ragged.csv").write_text("a,b,y\n1,2,1\n3,1\n")
    write_people(tmp_path / "ok.csv", 10, seed=4)
    cases = [
        (["train", net, str(tmp_path / "empty.csv"), "--target", "y"], "is empty"),
        (["train", net, str(tmp_path / "ragged.csv"), "--target", "y"], "line 3 has 2 cells, the header has 3"),
        (["train", net, str(tmp_path / "ok.csv"), "--target", "nope"], "has no column 'nope'"),
        (["train", net, str(tmp_path / "ok.csv"), "--target", "income"], "network's sigmoid output only reaches"),
        (["save", net, str(tmp_path / "no" / "such" / "net.npz")], "does not exist"),
        (["create", "5,,1"], "whole numbers separated by commas"),
        (["create", "2.5,1"], "whole numbers separated by commas"),
        (["train", net, str(tmp_path / "ok.csv"), "--target", "label", "--batch-size", "0"], "--batch-size"),
        (["train", net, str(tmp_path / "ok.csv"), "--target", "label", "--batch-size", "-1"], "--batch-size"),
        (["up", "--bind", addr, "--workers", "1"], "cannot listen on"),
    ]
    for args, why in cases:
        r = mesh_cmd(*args, "--broker", addr) if args[0] != "up" else mesh_cmd(*args)
        errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
        assert r.returncode != 0 and len(errors) == 1 and why in errors[0], (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_epoch_lines_arrive_as_epochs_end_when_piped(mesh_up, tmp_path, started):
    """Held after its first epoch line (a group stopped), `mesh train` has not ended: the line was not
    waiting for the end."""
    from conftest import held
    _, addr = mesh_up
    write_people(tmp_path / "train.csv", 40, seed=5)
    net = mesh_cmd("create", "4,1", "--broker", addr).stdout.strip()
    status = mesh_cmd("status", "--json", "--broker", addr).stdout
    import json
    group = [p["pid"] for n in json.loads(status)["networks"] if n["net"] == net for p in n["processes"]][0]
    p = started("train", net, str(tmp_path / "train.csv"), "--target", "label", "--epochs", "3", "--broker", addr)
    assert read_until(p, "epoch 1:")[-1].startswith("epoch 1: loss")
    with held(group):
        assert p.poll() is None
    assert p.wait(timeout=60) == 0
