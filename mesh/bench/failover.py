"""A broker pair, measured: what the standby costs while nothing fails, and
how long a failover takes when the active broker is killed (SIGKILL).

Cost: predict latency and exact training throughput on a pair against a
single broker, rounds alternating, same machine, same run. Failover: the
active broker is killed while a client waits on an exact training run (after
its step 20), and while a client is idle; measured from the kill to the
run's answer (and against the same run without a kill), and to the first
predict answered by the new active broker."""
import os
import signal
import threading
import time

import numpy as np

from ..client import Client
from ..localmesh import LocalMesh
from .common import fmt_spread, predict_seconds

COLUMNS = ["measure", "median (min-max)", "baseline", "ratio"]
SPEC = dict(activation="tanh", output="linear", dtype="float64")
EPOCHS = 8  # of the training run a kill interrupts


def data(rows):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, 10))
    return X, np.tanh(X[:, :1] - X[:, 1:2])


def predict_p50(net, n):
    return float(np.median(predict_seconds(net, np.array([[0.1] * 10]), n, warm=20)))


def train_rate(net, X, Y):
    t = time.perf_counter()
    net.train(X, Y, epochs=2, batch_size=32, progress=False)
    return 2 * len(X) / (time.perf_counter() - t)


def online_rate(net, X, Y):
    t = time.perf_counter()
    net.online(X, Y, learning_rate=0.05, window=8)
    return len(X) / (time.perf_counter() - t)


def cost(standby, n, X, Y):
    with LocalMesh(2, timeout=120, standby=standby) as client:
        small = client.create([5, 5, 1], seed=7, **SPEC)
        wide = client.create([64, 64, 1], seed=1, **SPEC)
        return predict_p50(small, n), train_rate(wide, X, Y), online_rate(small, X[:n], Y[:n])


def failover_round(X, Y):
    """(seconds from the kill to the training run's answer, the same run's seconds without a kill,
    seconds from a kill to the first predict answered)."""
    m = LocalMesh(2, timeout=120, standby=True)
    client = m.start()
    try:
        net = client.create([64, 64, 1], seed=1, **SPEC)
        t = time.perf_counter()
        net.train(X, Y, epochs=EPOCHS, batch_size=32, seed=3, progress=False)
        plain = time.perf_counter() - t
        out = {}

        def train():
            out["start"] = time.perf_counter()
            out["history"] = net.train(X, Y, epochs=EPOCHS, batch_size=32, seed=3, progress=False)
            out["end"] = time.perf_counter()
        runner = threading.Thread(target=train)
        runner.start()
        with Client(m.address.split(",")[0], timeout=30) as watcher:  # the active broker, directly
            while not any((n.get("training") or {}).get("step", 0) >= 20 for n in watcher.status()["networks"]):
                time.sleep(0.01)
        killed_training = time.perf_counter()
        os.kill(m.brokers[0].pid, signal.SIGKILL)
        runner.join(300)
        through = out["end"] - out["start"]  # the whole run, failover included
        # now the other way round: the old primary comes back as standby, the active one is killed idle
        a, b = m.address.split(",")
        m.start_broker(["--bind", a, "--peer", b, "--primary"])
        while (client.status()["broker"]["pair"] or {}).get("lag") != 0 or \
                client.status()["broker"]["pair"]["peer_role"] != "standby":
            time.sleep(0.05)
        killed = time.perf_counter()
        os.kill(m.brokers[1].pid, signal.SIGKILL)
        net.predict(X[:1], remember=False)
        first = time.perf_counter() - killed
        return out["end"] - killed_training, through, plain, first
    finally:
        m.stop()


def run(rounds=3, quick=False, log=print):
    n, rows = (100, 512) if quick else (400, 2048)
    X, Y = data(rows)
    p50, rate, online = ({False: [], True: []} for _ in range(3))
    for r in range(rounds):
        for standby in (False, True):
            lat, rps, pairs = cost(standby, n, X, Y)
            p50[standby].append(lat)
            rate[standby].append(rps)
            online[standby].append(pairs)
            log(f"  round {r + 1}: {'pair' if standby else 'single'} predict p50 {lat * 1e6:.0f} us, "
                f"training {rps:,.0f} rows/s, online {pairs:,.0f} pairs/s")
    fail = []
    for r in range(rounds):
        fail.append(failover_round(X, Y))
        log(f"  failover round {r + 1}: training answered {fail[-1][0]:.1f}s after the kill "
            f"(run {fail[-1][1]:.1f}s, {fail[-1][2]:.1f}s without); first predict {fail[-1][3]:.1f}s after a kill")
    med = {"p50_1": float(np.median(p50[False])), "r_1": float(np.median(rate[False])),
           "o_1": float(np.median(online[False]))}
    ratios_p50 = [a / b for a, b in zip(p50[True], p50[False])]
    ratios_rate = [a / b for a, b in zip(rate[True], rate[False])]
    ratios_online = [a / b for a, b in zip(online[True], online[False])]
    return [
        {"measure": "predict p50, pair (us)", "median (min-max)": fmt_spread([v * 1e6 for v in p50[True]], 0),
         "baseline": f"{med['p50_1'] * 1e6:.0f} single", "ratio": fmt_spread(ratios_p50)},
        {"measure": "exact training, pair (rows/s)", "median (min-max)": fmt_spread(rate[True], 0),
         "baseline": f"{med['r_1']:.0f} single", "ratio": fmt_spread(ratios_rate)},
        {"measure": "online, [5,5,1] window 8, pair (pairs/s)", "median (min-max)": fmt_spread(online[True], 0),
         "baseline": f"{med['o_1']:.0f} single", "ratio": fmt_spread(ratios_online)},
        {"measure": "kill -9 mid-training -> run answered (s)", "median (min-max)": fmt_spread([f[0] for f in fail], 1),
         "baseline": "", "ratio": ""},
        {"measure": "training run through a failover (s)", "median (min-max)": fmt_spread([f[1] for f in fail], 1),
         "baseline": f"{np.median([f[2] for f in fail]):.1f} no kill", "ratio": fmt_spread([f[1] / f[2] for f in fail])},
        {"measure": "kill -9 idle -> next predict answered (s)", "median (min-max)": fmt_spread([f[3] for f in fail], 1),
         "baseline": "", "ratio": ""},
    ]
