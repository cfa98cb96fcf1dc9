"""The data plane's targets in one table, one run, one local mesh: per neuron, the original's
online test at three sizes, a [128,128,1] net's create / predict / memory, the [400,400,1] net
of 801 processes; in group mode, train(batch_size=1) and online(window=8) against a bare ring of
four relays measured in the same run, the original's online test beside it, and small digits
against in-process numpy. Reuses scaling.measure, ring.apart and throughput.compare.

Safety: the mesh's workers start with a memory budget (what the host has available, less a
margin), so the mesh's own planner decides whether a big per-neuron net may start; when it
refuses, its refusal, with its numbers, is that row's result. Every receive has the client's
timeout; the LocalMesh ends every process it started, on failure or Ctrl-C too."""
import statistics
import time

import numpy as np

from ..errors import RemoteError
from ..localmesh import LocalMesh
from ..procstat import pss_bytes
from ..reference import ReferenceNet
from ..sizes import GiB, MiB, format_size
from . import ring, scaling, throughput
from .common import fmt_spread, predict_seconds

MARGIN = 4 * GiB  # left to the rest of the machine, out of what it has available
FULL = dict(online_ns=(100, 200, 400), small=128, big=400, group_n=100, seconds=3.0, predicts=20, ring_trips=2000)
QUICK = dict(online_ns=(2, 3, 4), small=4, big=5, group_n=100, seconds=0.5, predicts=20, ring_trips=200)
COLUMNS = ["measure", "measured: median (min-max)", "target", "met", "beside it, same run"]


def mem_available():
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))


def budget(workers=2, margin=MARGIN):
    """Each worker's memory budget: the host's MemAvailable less a margin, shared out."""
    return max(256 * MiB, (mem_available() - margin) // workers)


def _row(measure, measured, target="-", met="-", beside="-"):
    return dict(zip(COLUMNS, (measure, measured, target, met, beside)))


def _met(value, ok):
    return "yes" if ok(value) else "no"


def _refused(e):
    """A create the broker refused (the planner's numbers, or why it failed) or that failed here."""
    return f"the broker: {e}" if isinstance(e, RemoteError) else f"failed: {type(e).__name__}: {e}"


def per_neuron_online(client, ns, rounds, seconds, log):
    """The original's online test, one process per neuron, [10, n, n, 1]: one net per n, timed
    `rounds` times (scaling.measure, one row per round); a refused create is that row's result."""
    targets = {100: 15, 200: 4, 400: 1}
    rows, rng = [], np.random.default_rng(0)
    for n in ns:
        name = f"per neuron, online (predict, wait, backprop, wait), [10, {n}, {n}, 1], pairs/s"
        target = targets.get(n)
        orig = scaling.ORIGINAL.get(n)
        beside = f"the original {orig:g}" if orig else "-"
        try:
            got = scaling.measure(client, n, 1, (1,) * rounds, seconds, 100_000, rng, log)
        except Exception as e:  # a refusal is a result; so is a failure
            rows.append(_row(name, _refused(e), f">= {target:g}" if target else "-", "no" if target else "-", beside))
            log(f"  n={n} per neuron: {_refused(e)}")
            continue
        errors = [r["error"] for r in got if "error" in r]
        rates = [r["pairs_per_s"] for r in got if "error" not in r]
        if not rates:
            rows.append(_row(name, f"failed: {errors[0]}", f">= {target:g}" if target else "-", "-", beside))
            continue
        med = statistics.median(rates)
        rows.append(_row(name + f" ({got[0]['processes']} processes, created in {got[0]['create_s']:.1f} s)",
                         fmt_spread(rates), f">= {target:g}" if target else "-",
                         _met(med, lambda v: v >= target) if target else "-", beside))
    return rows


def _pss_mib(net):
    return [pss_bytes(p["pid"]) / MiB for p in net.processes() if p.get("pid")]


def per_neuron_small(client, n, rounds, predicts, log):
    """[n, n, 1] per neuron, created `rounds` times: create seconds, the p50 of `predicts`
    single-row predicts (direct, remember=False), and the PSS of every group process."""
    creates, p50s, pss, procs, failed, seen = [], [], [], 0, [], 2 * n + 1
    row = np.random.default_rng(1).random(10)
    name = f"per neuron [{n},{n},1]"
    for r in range(rounds):
        t0 = time.perf_counter()
        try:
            net = client.create([n, n, 1], group_size=1, seed=0)
        except Exception as e:  # a refusal is a result; so is a failure
            failed.append(_refused(e))
            log(f"  {name} round {r + 1}: {failed[-1]}")
            continue
        try:
            creates.append(time.perf_counter() - t0)
            net.predict(row, remember=False)  # sizes layer 1
            p50s.append(1e3 * statistics.median(predict_seconds(net, row, predicts, warm=3)))
            each = _pss_mib(net)
            pss += each
            procs, seen = 2 * n + 1, min(seen, len(each))
        finally:
            net.drop()
        log(f"  {name} round {r + 1}: created in {creates[-1]:.1f} s, predict p50 {p50s[-1]:.0f} ms, "
            f"PSS per group {statistics.median(each):.1f} MiB (of {procs} groups)")
    if not creates:
        return [_row(f"{name}: create s / predict one row p50 ms / PSS per group MiB", failed[0],
                     "<= 5 s / <= 100 ms / <= 8 MiB", "no")]
    if failed:  # the rounds that ran are the result; the others say why they did not
        name += f" ({len(creates)} of {rounds} rounds; the other: {failed[0]})"
    return [_row(f"{name}, {procs} processes: create s", fmt_spread(creates), "<= 5",
                 _met(statistics.median(creates), lambda v: v <= 5)),
            _row(f"{name}: predict one row p50 ms ({predicts} predicts a round, direct, remember=False)",
                 fmt_spread(p50s), "<= 100", _met(statistics.median(p50s), lambda v: v <= 100)),
            _row(f"{name}: PSS per group MiB (every group process, every round"
                 + ("" if seen == procs else f"; as few as {seen} of {procs} were running in a round") + ")",
                 fmt_spread(pss), "<= 8", _met(statistics.median(pss), lambda v: v <= 8))]


def per_neuron_big(client, n, log):
    """[n, n, 1] per neuron once (float64): create seconds, total PSS of its group processes, and a
    short online run checked against the in-process reference (to 1e-9, as the exactness tests do:
    a neuron's sums are not added in BLAS's order)."""
    name = f"per neuron [{n},{n},1], {2 * n + 1} processes: create s / total PSS / trains exactly"
    target = "<= 60 s / <= 12 GiB / exact"
    t0 = time.perf_counter()
    try:
        net = client.create([n, n, 1], group_size=1, seed=0, dtype="float64")
    except Exception as e:  # a refusal is a result; so is a failure
        log(f"  [{n},{n},1] per neuron: {_refused(e)}")
        return [_row(name, _refused(e), target, "no")]
    try:
        created = time.perf_counter() - t0
        rng = np.random.default_rng(2)
        X, T = rng.random((8, scaling.INPUTS)), rng.integers(0, 2, size=(8, 1)).astype(np.float64)
        net.predict(X[:1], remember=False)  # sizes layer 1
        total = sum(_pss_mib(net)) * MiB
        ref = ReferenceNet(net.weights(), activation="sigmoid", output="sigmoid", loss="mse", dtype=np.float64)
        net.train(X, T, batch_size=1, learning_rate=0.1, shuffle=False, progress=False)
        ref.train(X, T, 1, 1, 0.1)
        error = max(float(np.max(np.abs(a - r))) for layer, ref_layer in zip(net.weights(), ref.layers)
                    for a, r in zip(layer, ref_layer))
        exact = all(np.allclose(a, r, rtol=1e-9, atol=1e-12) for layer, ref_layer in zip(net.weights(), ref.layers)
                    for a, r in zip(layer, ref_layer))
    finally:
        net.drop()
    ok = created <= 60 and total <= 12 * GiB and exact
    log(f"  [{n},{n},1] per neuron: created in {created:.1f} s, total PSS {format_size(total)}, exact {exact}")
    return [_row(name, f"{created:.1f} s / {format_size(total)} / {'exact' if exact else 'NOT exact'} "
                 f"(max |diff| {error:.1e})", target,
                 "yes" if ok else "no")]


def group_mode(client, n, rounds, seconds, trips, log):
    """[10, n, n, 1] in group mode (create's defaults): the original's online test, Network.online
    (window 8) and train(batch_size=1), `rounds` times each, and a bare ring of 4 relays once a round."""
    rng = np.random.default_rng(0)
    got = scaling.measure(client, n, None, (1,) * rounds, seconds, 100_000, rng, log, modes=tuple(scaling.MODES))
    rings = [ring.apart(4, trips)[0] for _ in range(rounds)]
    log(f"  a ring of 4 bare relays: {fmt_spread(rings)} round trips/s")
    rate = {m: [r["pairs_per_s"] for r in got if r["mode"] == m and "error" not in r] for m in scaling.MODES}
    rows = []
    for mode, what in (("train", "train(batch_size=1)"), ("pipelined", "online(window=8)")):
        ratios = [a / b for a, b in zip(rate[mode], rings)]
        rows.append(_row(f"group mode [10, {n}, {n}, 1], {what}, pairs/s / a bare 4-relay ring's round trips/s",
                         fmt_spread(ratios) if ratios else "failed", ">= 0.75",
                         _met(statistics.median(ratios), lambda v: v >= 0.75) if ratios else "no",
                         f"{fmt_spread(rate[mode])} pairs/s; ring {fmt_spread(rings)}/s" if ratios else "-"))
    sync = rate["sync"]
    rows.append(_row(f"group mode [10, {n}, {n}, 1], the original's online test (predict, wait, backprop, wait), "
                     "pairs/s",
                     fmt_spread(sync) if sync else "failed", "report it", "-", f"ring {fmt_spread(rings)}/s"))
    return rows


def digits(client, rounds, quick, log):
    X, Y, what = throughput.digits_data()
    if quick:
        X, Y = X[:256], Y[:256]
    small = dict(sizes=[256, 256, 10], activation="relu", output="softmax", loss="cross_entropy")
    r = throughput.compare(client, f"small ({what})", X, Y, small, 32, rounds, log=log)
    med = float(r["mesh/numpy"].split()[0])
    return [_row(f"group mode, small {what} [64,256,256,10] batch 32, mesh rows/s / in-process numpy's",
                 r["mesh/numpy"], ">= 0.5", _met(med, lambda v: v >= 0.5),
                 f"mesh {r['mesh rows/s']}, numpy {r['numpy rows/s']} rows/s")]


def run(rounds=3, quick=False, log=print):
    """Every row of the targets' table; (rows, a line saying the budget the planner had). The
    cheap rows first, on a mesh without budgets (group mode, digits, per neuron up to 257
    processes, as `mesh bench dataplane` ran them before); then the big per-neuron nets on a
    mesh whose workers have budgets, so that the planner decides whether they may start."""
    size = QUICK if quick else FULL
    first, *big = size["online_ns"]
    with LocalMesh(workers=2, timeout=600, start_timeout=120) as client:
        group = group_mode(client, size["group_n"], rounds, size["seconds"], size["ring_trips"], log)
        group += digits(client, rounds, quick, log)
        online = per_neuron_online(client, (first,), rounds, size["seconds"], log)
        small = per_neuron_small(client, size["small"], rounds, size["predicts"], log)
    each = budget()
    note = (f"the rows from [10, {big[0]}, {big[0]}, 1] per neuron on: each of 2 workers had a memory budget of "
            f"{format_size(each)} (MemAvailable {format_size(mem_available())} then, less {format_size(MARGIN)}, "
            "shared out)")
    log(f"  {note}")
    large = []
    for n in big + [None]:  # a fresh mesh for each: a worker lost in one does not shrink the next one's budget
        with LocalMesh(workers=2, timeout=300, start_timeout=120, worker_memory=each) as client:
            if n is None:
                large = per_neuron_big(client, size["big"], log)
            else:
                online += per_neuron_online(client, (n,), rounds, size["seconds"], log)
    return online + small + large + group, note
