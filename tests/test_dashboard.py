"""The dashboard over plain HTTP: /metrics, /api/state, read-only, who may
bind where; and its pure parts (the loss curve, the frames, addresses)."""
import http.client
import json
import os
import select
import signal
import subprocess
import sys
import time
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Harness
from mesh.dashboard.curve import Curve
from mesh.dashboard.frames import Frames
from mesh.broker.records import GroupRecord
from mesh.broker.statusview import links
from mesh.dashboard.listen import Listen, Refused, allowed, parse
from mesh.spec import Spec

FAMILIES = {"neuromesh_processes": "gauge", "neuromesh_workers": "gauge", "neuromesh_networks": "gauge",
            "neuromesh_restarts": "counter", "neuromesh_messages_sent": "counter",
            "neuromesh_steps_applied": "counter", "neuromesh_training_samples": "counter",
            "neuromesh_training_loss": "gauge", "neuromesh_training_samples_per_second": "gauge",
            "neuromesh_heartbeat_age_seconds": "gauge", "neuromesh_group_resident_memory_bytes": "gauge"}


def get(url, path, method="GET", headers=None):
    """(status, headers, body) of one request to the dashboard at url."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def until(read, ok, seconds=30):
    """read() again until ok(value) (the dashboard publishes a few times a second); its last value."""
    deadline = time.monotonic() + seconds
    while True:
        value = read()
        if ok(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def metrics(url):
    return {f.name: f for f in text_string_to_metric_families(get(url, "/metrics")[2].decode())}


class LoneBroker:
    """`mesh broker` alone (no worker, no work), with its dashboard on a free loopback port."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, "-m", "mesh", "broker", "--bind", "tcp://127.0.0.1:*", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     process_group=0, bufsize=0)  # unbuffered: select() sees each line

    def lines(self, n, timeout=30):
        out = []
        for _ in range(n):
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            assert ready, f"the broker printed {out} and then nothing within {timeout}s"
            out.append(self.proc.stdout.readline().decode())
        return out

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def lone_broker():
    made = []

    def start(*args):
        b = LoneBroker(*args)
        made.append(b)
        return b
    yield start
    for b in made:
        b.stop()


@pytest.fixture(scope="module")
def watched():
    """A mesh of two workers whose broker serves a dashboard."""
    h = Harness(2, timeout=30, dashboard="127.0.0.1:0")
    yield h
    h.stop()


def test_metrics_has_every_family_at_zero_before_any_work(lone_broker):
    b = lone_broker("--dashboard", "127.0.0.1:0")
    listening, board = b.lines(2)
    assert listening.startswith("mesh broker listening on") and board.startswith("dashboard: http://127.0.0.1:")
    url = board.split()[-1]
    assert not url.endswith(":0/"), "the printed URL names the port really bound"
    status, headers, body = get(url, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    families = metrics(url)
    assert {name: f.type for name, f in families.items()} == FAMILIES
    for f in families.values():
        assert f.samples, f"{f.name} has no sample"
        assert all(s.value == 0 for s in f.samples), f.samples
    states = {s.labels["state"] for s in families["neuromesh_processes"].samples}
    assert states == {"alive", "dead", "restarting", "starting"}


def test_state_names_every_process_and_metrics_count_the_work(watched):
    net = watched.remember(watched.client.create([3, 2], group_size=1, seed=1))
    net.train([[0, 1], [1, 0]] * 8, [[1, 0], [0, 1]] * 8, epochs=2, batch_size=4, learning_rate=0.5, progress=False)
    url, procs = watched.mesh.dashboard_url, {(p["gid"], p["pid"]) for p in net.processes()}
    status, headers, _ = get(url, "/api/state")
    assert status == 200 and headers["Content-Type"] == "application/json"

    def shown():
        return {n["net"]: n for n in json.loads(get(url, "/api/state")[2])["networks"]}.get(net.id)
    # the frame read may still be one from before the run (they come a few times a second)
    n = until(shown, lambda n: n is not None and (n["run"] or {}).get("state") == "done")
    assert {(p["gid"], p["pid"]) for p in n["processes"]} == procs
    assert {p["state"] for p in n["processes"]} == {"alive"}
    assert n["run"]["step"] == 8 and len(n["run"]["curve"]) == 8 and len(n["run"]["epoch_losses"]) == 2
    assert n["links"]["by_host"] == [{"layer": 1, "to_layer": 2, "from": "127.0.0.1", "to": "127.0.0.1", "count": 6,
                                      "cross_host": False}]
    assert n["graph"] == [[0], [1]]
    # 2 epochs x 4 steps of 4 rows, each counted once from the step itself, whenever the snapshots came
    families = until(lambda: metrics(url), lambda f: f["neuromesh_steps_applied"].samples[0].value >= 8)
    assert families["neuromesh_training_samples"].samples[0].value == 32
    assert families["neuromesh_steps_applied"].samples[0].value == 8
    assert families["neuromesh_workers"].samples[0].value == 2
    workers = json.loads(get(url, "/api/state")[2])["workers"]  # memory and disk: planned, measured, budget
    assert all(w["memory"]["budget"] and w["memory"]["planned"] and w["disk"]["budget"] for w in workers), workers
    assert sum(w["disk"]["planned"] for w in workers) > 0 and sum(w["disk"]["measured"] for w in workers) > 0


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "BREW"])
@pytest.mark.parametrize("path", ["/", "/api/state", "/metrics", "/events"])
def test_every_method_but_get_is_refused(watched, method, path):
    status, headers, _ = get(watched.mesh.dashboard_url, path, method=method)
    assert status == 405 and headers["Allow"] == "GET"


def test_a_page_from_another_host_name_is_refused(watched):
    """A web page whose own name was rebound to 127.0.0.1 sends its name as Host: not ours."""
    status, _, _ = get(watched.mesh.dashboard_url, "/api/state", headers={"Host": "attacker.example:80"})
    assert status == 403


def test_a_token_is_asked_for_when_set(lone_broker):
    b = lone_broker("--dashboard", "127.0.0.1:0", "--dashboard-token", "s3cret")
    url = b.lines(2)[1].split()[-1]
    assert url.endswith("/?token=s3cret")
    base = url.split("?")[0]
    assert get(base, "/metrics")[0] == 401
    assert get(base, "/metrics?token=wrong")[0] == 401
    assert get(base, "/metrics?token=s3cret")[0] == 200
    assert get(base, "/metrics", headers={"Authorization": "Bearer s3cret"})[0] == 200


def test_a_non_loopback_dashboard_without_a_token_is_refused():
    r = subprocess.run([sys.executable, "-m", "mesh", "broker", "--bind", "tcp://127.0.0.1:*",
                        "--dashboard", "0.0.0.0:0"], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 1
    assert "reachable from other hosts and no token is set" in r.stderr and "Traceback" not in r.stderr


def test_who_may_listen_where():
    assert parse("off") is None
    assert parse(None) == Listen(fallback=True)
    assert parse("127.0.0.1:0") == Listen("127.0.0.1", 0)
    assert parse("[::1]:9000").host == "::1"
    with pytest.raises(Refused, match="HOST:PORT"):
        parse("8787")
    assert allowed(parse("127.0.0.1:0")).token is None
    with pytest.raises(Refused):
        allowed(parse("0.0.0.0:8787"))
    assert allowed(parse("0.0.0.0:8787"), token="t").token == "t"
    assert len(allowed(parse("10.1.2.3:8787"), keys=True).token) >= 20  # drawn at random, shown in the URL
    assert "WARNING" in allowed(parse("0.0.0.0:8787"), insecure=True).warning


def test_a_long_run_keeps_a_bounded_curve_of_the_whole_run():
    c = Curve(limit=8)
    for step in range(1, 101):
        c.add(step, float(step))
    points = c.view()
    assert len(points) <= 9 and points[0][0] <= 16 and points[-1][0] == 100
    assert [p[0] for p in points] == sorted(p[0] for p in points)
    c.add(101, float("nan"))  # a diverged step is no point
    assert all(v == v for _, v in c.view())


def test_frames_reach_a_reader_that_keeps_up_and_only_the_newest_one_that_fell_behind():
    f = Frames(keep=3)
    f.publish({"n": 1})
    f.publish({"n": 2})
    assert [x.state["n"] for x in f.after(0, timeout=0)] == [1, 2]
    assert f.after(2, timeout=0) == []
    for n in range(3, 8):
        f.publish({"n": n})
    assert [x.state["n"] for x in f.after(2, timeout=0)] == [7]
    f.close()
    assert f.after(7, timeout=5) == []  # closing wakes every reader at once


def test_links_follow_every_edge_of_a_graph():
    """Layer 3 reads layers 2 and 1 and the rows: links leave layer 1 for layers 2 and 3, layer 2
    for 3, counted by host pair; the rows' edge is the broker's, not a link."""
    hosts = {"n.1.0": "a", "n.1.1": "b", "n.2.0": "a", "n.3.0": "a", "n.3.1": "b"}
    net = SimpleNamespace(layers=[["n.1.0", "n.1.1"], ["n.2.0"], ["n.3.0", "n.3.1"]],
                          groups={g: GroupRecord(gid=g, layer=0, lo=0, hi=1, host=h) for g, h in hosts.items()},
                          spec=Spec([2, 1, 2], inputs={3: [2, 1, 0]}))
    got = {(l["layer"], l["to_layer"], l["from"], l["to"]): l["count"] for l in links(net)["by_host"]}
    assert got == {(1, 2, "a", "a"): 1, (1, 2, "b", "a"): 1,
                   (2, 3, "a", "a"): 1, (2, 3, "a", "b"): 1,
                   (1, 3, "a", "a"): 1, (1, 3, "a", "b"): 1, (1, 3, "b", "a"): 1, (1, 3, "b", "b"): 1}
    assert all(l["cross_host"] == (l["from"] != l["to"]) for l in links(net)["by_host"])
    assert links(net)["total"] == 8 and links(net)["cross_host"] == 4
