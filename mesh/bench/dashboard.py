"""The broker's throughput with the dashboard watched against unwatched, in
one run on one mesh, rounds alternating. Watched: a viewer reads every frame
of /events (as the page does) and /metrics and /api/state are fetched every
second (as Prometheus and a script would), from a process of its own as a
browser would be. Unwatched: the dashboard still builds its snapshots, and
nobody reads them."""
import http.client
import json
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import numpy as np

from ..localmesh import LocalMesh
from .common import fmt_spread, spread


class Viewer:
    """A browser's share of the work: every frame of the event stream, and the other routes now and then."""

    def __init__(self, url):
        self.url, self.frames, self.bytes, self.fetches = urlsplit(url), 0, 0, 0
        self.stopping, self.first = threading.Event(), threading.Event()
        self.threads = [threading.Thread(target=self.watch, daemon=True),
                        threading.Thread(target=self.scrape, daemon=True)]

    def connect(self):
        return http.client.HTTPConnection(self.url.hostname, self.url.port, timeout=10)

    def watch(self):
        conn = self.connect()
        conn.request("GET", "/events")
        stream = conn.getresponse()
        while not self.stopping.is_set():
            line = stream.readline()
            if not line:
                break
            if line.startswith(b"data: "):
                self.frames += 1
                self.bytes += len(line)
                self.first.set()
        conn.close()

    def scrape(self):
        while not self.stopping.wait(1.0):
            for path in ("/metrics", "/api/state"):
                conn = self.connect()
                conn.request("GET", path)
                conn.getresponse().read()
                conn.close()
                self.fetches += 1

    def until_stdin_closes(self):
        """Watch until told to stop (stdin closed), then print what was seen."""
        for t in self.threads:
            t.start()
        self.first.wait(30)
        print("watching", flush=True)
        sys.stdin.read()
        self.stopping.set()
        for t in self.threads:
            t.join(15)
        print(json.dumps({"frames": self.frames, "bytes": self.bytes, "fetches": self.fetches}), flush=True)


class Watching:
    """A Viewer in a process of its own, for the duration of a with-block: it competes for the CPU
    as a browser does, and not for the interpreter of the client being measured."""

    def __init__(self, url):
        self.proc = subprocess.Popen([sys.executable, "-m", "mesh.bench.dashboard", url], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def __enter__(self):
        if self.proc.stdout.readline().strip() != "watching":  # started, and the first frame in: measure now
            raise RuntimeError("the viewer could not watch the dashboard")
        return self

    def __exit__(self, *exc):
        out, _ = self.proc.communicate(timeout=60)
        self.seen = json.loads(out)


def predicts_per_second(net, n):
    row = [0.3, 0.7]
    t = time.perf_counter()
    for _ in range(n):
        net.predict(row, remember=False)
    return n / (time.perf_counter() - t)


def rows_per_second(net, X, Y):
    t = time.perf_counter()
    net.train(X, Y, batch_size=32, learning_rate=0.01, shuffle=False, progress=False)
    return len(X) / (time.perf_counter() - t)


def state_of(url):
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("GET", "/api/state")
    body = conn.getresponse().read()
    conn.close()
    return body


def run(rounds=3, quick=False, log=print):
    n_predicts, rows = (300, 4096) if quick else (1500, 32768)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, 64)).astype(np.float32)
    Y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, rows)]
    out = []
    mesh = LocalMesh(workers=2, timeout=600, dashboard="127.0.0.1:0")
    with mesh as client:
        url = mesh.dashboard_url
        # beside the measured networks, one of 33 processes makes every snapshot larger
        client.create([16, 16, 1], group_size=1, seed=0).predict([0.0, 1.0], remember=False)
        nets = {"predict 1 row, [5, 5, 1] (3 processes)": (
                    client.create([5, 5, 1], seed=0), lambda net: predicts_per_second(net, n_predicts), "predicts/s"),
                "train, [256, 256, 10] on 64 inputs, batch 32 (3 processes)": (
                    client.create([256, 256, 10], activation="relu", output="softmax", loss="cross_entropy", seed=0),
                    lambda net: rows_per_second(net, X, Y), "rows/s")}
        for name, (net, measure, unit) in nets.items():
            measure(net)  # untimed: first messages, page faults
            closed, opened, frames = [], [], []
            for r in range(rounds):
                closed.append(measure(net))
                with Watching(url) as v:
                    opened.append(measure(net))
                seen = v.seen
                frames.append(seen["frames"])
                log(f"  {name} round {r + 1}: closed {closed[-1]:,.0f} {unit}, open {opened[-1]:,.0f} "
                    f"({seen['frames']} frames, {seen['bytes'] / max(seen['frames'], 1) / 1024:.1f} KiB each, "
                    f"{seen['fetches']} fetches)")
            out.append({"workload": name, "unit": unit, "dashboard closed": fmt_spread(closed),
                        "dashboard open": fmt_spread(opened),
                        "open / closed": fmt_spread([o / c for o, c in zip(opened, closed)]),
                        "frames seen": f"{spread(frames)[0]:.0f}"})
        state = json.loads(state_of(url))
        log(f"  a snapshot of the three networks (39 processes): {len(state_of(url)) / 1024:.1f} KiB as JSON, built in "
            f"{state['broker']['snapshot_ms']:.2f} ms of the broker loop, 4 times a second")
    return out


COLUMNS = ["workload", "unit", "dashboard closed", "dashboard open", "open / closed", "frames seen"]


if __name__ == "__main__":
    Viewer(sys.argv[1]).until_stdin_closes()
