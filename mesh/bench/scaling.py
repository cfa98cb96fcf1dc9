"""The original's scaling benchmark: a net [n, n, 1] on 10 inputs trained
online (predict one row, then backprop it), timed as pairs per second.

Part A runs each layer as one process (3 processes), Part B one process per
neuron (2n+1 processes), one row per pair and also batches of rows. Every
row of the result also says how many cores the mesh kept busy and what one
weight costs per pair, so the curve can be read against the network's size.

    python -m mesh.bench.scaling --quick
    python benchmarks/scaling.py --png scaling.png --json scaling.json
"""
import argparse
import json
import os
import sys
import time
import traceback

import numpy as np

from mesh.localmesh import LocalMesh

INPUTS = 10
# The Elixir original on this machine, pairs/s of [n, n, 1] trained online.
# None: it never finished a single step (over 15 GiB of memory).
ORIGINAL = {5: 6116, 10: 2664, 25: 582, 50: 113, 100: 14.9, 200: 0.77, 400: 0.09, 800: None}
ORIGINAL_CORES = 1.0  # it kept about one of the two cores busy

QUICK_GROUPED = (5, 10, 25, 50, 100, 200, 400, 800)
QUICK_NEURON = (1, 4, 16)
_TICK = os.sysconf("SC_CLK_TCK")


def weights(n):
    """Parameters of [n, n, 1] on 10 inputs: weights and biases of the three layers."""
    return INPUTS * n + n + n * n + n + n + 1


def cpu_seconds(pids):
    """utime + stime of each pid that still exists, from /proc/<pid>/stat."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # gone: it counts for nothing rather than failing the run
        fields = stat[stat.rindex(")") + 2:].split()  # the name may hold spaces; fields start at state
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def machine_busy_seconds():
    """CPU seconds the whole machine has spent not idle, from /proc/stat: set
    against our own CPU it shows whether something else shared the cores."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICK


def _mesh_pids(client, net):
    return [client.status()["broker"]["pid"], os.getpid()] + [p["pid"] for p in net.processes() if p.get("pid")]


def _loop(net, X, T, batch, seconds, max_pairs, min_pairs=2):
    """Run predict + backprop on successive batches; (rows done, wall seconds)."""
    pool = len(X)
    start = time.perf_counter()
    deadline = start + seconds
    done, i = 0, 0
    while done < max_pairs:
        lo = (i * batch) % (pool - batch + 1)
        if batch == 1:
            net.predict(X[lo])            # the original's shape: one 1-D row...
            net.backprop(T[lo:lo + 1])    # ...and its single target, (1, 1)
        else:
            net.predict(X[lo:lo + batch])
            net.backprop(T[lo:lo + batch])
        done += batch
        i += 1
        if done >= min_pairs * batch and time.perf_counter() >= deadline:
            break
    return done, time.perf_counter() - start


def _loop_pipelined(net, X, T, seconds, max_pairs, how, chunk):
    """Rows trained online in chunks, until the time is up: `how` is "pipelined"
    (Network.online: predicts and backprops in flight, the same steps) or "train"
    (one train request with batches of one row, the same steps again)."""
    start = time.perf_counter()
    done, i = 0, 0
    while done < max_pairs:
        lo = (i * chunk) % (len(X) - chunk + 1)
        if how == "pipelined":
            net.online(X[lo:lo + chunk], T[lo:lo + chunk], window=8)
        else:
            net.train(X[lo:lo + chunk], T[lo:lo + chunk], batch_size=1, shuffle=False, progress=False)
        done += chunk
        i += 1
        if time.perf_counter() >= start + seconds:
            break
    return done, time.perf_counter() - start


MODES = {"sync": "predict, wait, backprop, wait", "pipelined": "Network.online, 8 rows in flight",
         "train": "train(batch_size=1): one request"}


def measure(client, n, group_size, batches, seconds, max_pairs, rng, log, modes=("sync",)):
    """One network, timed at each batch size; one result row per batch size."""
    X = rng.random((1024, INPUTS))
    T = rng.integers(0, 2, size=(1024, 1)).astype(np.float64)
    part = "A grouped" if group_size is None else "B per-neuron"
    rows = []
    t0 = time.perf_counter()
    net = client.create([n, n, 1], group_size=group_size, seed=0)
    try:
        created = time.perf_counter() - t0
        procs = len(net.processes())
        pids = _mesh_pids(client, net)
        runs = [(b, m) for b in batches for m in (modes if b == 1 else ("sync",))]
        for batch, mode in runs:
            row = {"part": part, "n": n, "group_size": group_size, "processes": procs, "batch": batch,
                   "mode": mode, "weights": weights(n), "create_s": round(created, 3)}
            try:
                # Warm-up: the first pass sizes the input layer, and numpy and the sockets settle.
                _loop(net, X, T, batch, min(0.5, seconds / 4), max_pairs=3 * batch, min_pairs=1)
                cpu0, box0 = cpu_seconds(pids), machine_busy_seconds()
                if mode == "sync":
                    done, wall = _loop(net, X, T, batch, seconds, max_pairs)
                    sync_rate = done / wall
                else:  # chunks sized so that a slow net still ends near its time
                    chunk = int(min(256, max(8, sync_rate * seconds / 4)))
                    done, wall = _loop_pipelined(net, X, T, seconds, max_pairs, mode, chunk)
                cpu, box = cpu_seconds(pids) - cpu0, machine_busy_seconds() - box0
                rate = done / wall
                row.update(pairs=done, wall_s=round(wall, 3), pairs_per_s=rate,
                           ns_per_weight=1e9 / (rate * row["weights"]), cores=cpu / wall,
                           machine_cores=box / wall)
                if batch == 1 and n in ORIGINAL:  # the original trained online: one row per pair
                    orig = ORIGINAL[n]
                    row["original_pairs_per_s"] = orig
                    row["speedup"] = rate / orig if orig else None
            except Exception as e:
                row["error"] = f"{type(e).__name__}: {e}"
                log(f"  n={n} {part} batch={batch}: FAILED\n{traceback.format_exc()}")
            rows.append(row)
            log("  " + _line(row))
    finally:
        try:
            net.drop()
        except Exception as e:  # a broken net should not hide the measurement that broke it
            log(f"  n={n} {part}: drop failed: {type(e).__name__}: {e}")
    return rows


def run(ns_grouped=(5, 10, 25, 50, 100, 200, 400, 800, 1024, 2048, 4096, 8192),
        ns_neuron=(1, 2, 4, 8, 16, 32, 64, 128), seconds=3.0, batch_rows=(1, 16), log=print,
        max_pairs=100_000, workers=2, timeout=600):
    """Both parts on one local mesh; a list of result rows (dicts)."""
    rng = np.random.default_rng(0)
    rows = []
    with LocalMesh(workers=workers, timeout=timeout) as client:
        log(f"Part A: one process per layer, [n, n, 1], one row per pair, ~{seconds:g}s each")
        for n in ns_grouped:
            rows += _guarded(measure, client, n, None, (1,), seconds, max_pairs, rng, log, "A grouped", tuple(MODES))
        log(f"Part B: one process per neuron, rows per pair {', '.join(map(str, batch_rows))}")
        for n in ns_neuron:
            rows += _guarded(measure, client, n, 1, tuple(batch_rows), seconds, max_pairs, rng, log,
                             "B per-neuron", tuple(MODES))
    return rows


def _guarded(fn, client, n, group_size, batches, seconds, max_pairs, rng, log, part, modes):
    """A failure to create one net is a row saying so, not the end of the sweep."""
    try:
        return fn(client, n, group_size, batches, seconds, max_pairs, rng, log, modes)
    except Exception as e:
        log(f"  n={n} {part}: FAILED\n{traceback.format_exc()}")
        return [{"part": part, "n": n, "group_size": group_size, "batch": b, "mode": "sync", "weights": weights(n),
                 "error": f"{type(e).__name__}: {e}"} for b in batches]


def _num(x, digits=3):
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _orig(row):
    if "original_pairs_per_s" not in row:
        return "-"
    o = row["original_pairs_per_s"]
    return "never" if o is None else _num(o)


def _line(row):
    if "error" in row:
        return f"n={row['n']} batch={row['batch']}: {row['error']}"
    return (f"n={row['n']} procs={row['processes']} batch={row['batch']} {row['mode']}: {_num(row['pairs_per_s'])} pairs/s, "
            f"{_num(row['ns_per_weight'])} ns/weight, {row['cores']:.2f} cores (machine {row['machine_cores']:.2f})")


COLUMNS = ("part", "n", "procs", "rows/pair", "mode", "weights", "pairs/s", "ns/weight", "cores", "machine", "original",
           "speed-up", "pairs", "secs")


def table(rows):
    """The result rows as a plain-text table."""
    body, errors = [], []
    for r in rows:
        cells = [r["part"], str(r["n"]), str(r.get("processes", "-")), str(r["batch"]), r.get("mode", "sync"),
                 f"{r['weights']:,}"]
        if "error" in r:
            errors.append((len(body), "ERROR " + r["error"]))
            cells += [""] * 8
        else:
            sp = r.get("speedup")
            cells += [_num(r["pairs_per_s"]), _num(r["ns_per_weight"]), f"{r['cores']:.2f}", f"{r['machine_cores']:.2f}", _orig(r),
                      "-" if sp is None else f"{_num(sp)}x", f"{r['pairs']:,}", f"{r['wall_s']:.1f}"]
        body.append(cells)
    widths = [max([len(c)] + [len(b[i]) for b in body]) for i, c in enumerate(COLUMNS)]

    def fmt(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    lines = [fmt(COLUMNS), fmt(["-" * w for w in widths])] + [fmt(b) for b in body]
    for i, msg in errors:  # an error is too long for a cell: it goes on its row, after the numbers' columns
        lines[2 + i] = fmt(body[i][:6]) + "  " + msg
    lines.append("pairs/s: one predict + one backprop per row (rows/pair > 1: rows/s of batched pairs).\n"
                 "mode: " + "; ".join(f"{k}: {v}" for k, v in MODES.items()) + " (all three give the same weights).\n"
                 "cores: CPU of this process, the broker and the net's groups per wall second; machine: every "
                 f"process's ({os.cpu_count()} cores here), so machine well above cores means the box was shared.\n"
                 f"original: the Elixir net on this machine, ~{ORIGINAL_CORES:g} core busy; "
                 "'never': no step finished (>15 GiB).")
    return "\n".join(lines)


def plot(rows, path):
    """Log-log pairs/s against n, the original beside ours; None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(8, 5.5))
    known = sorted((n, v) for n, v in ORIGINAL.items() if v)
    ax.plot(*zip(*known), "k--o", label="original (Elixir), online")
    series = {}
    for r in rows:
        if "error" not in r:
            label = ("grouped, 1 process/layer" if r["group_size"] is None else "1 process/neuron") + \
                    f", {r['batch']} row{'s' if r['batch'] > 1 else ''}/pair, {r.get('mode', 'sync')}"
            series.setdefault(label, []).append((r["n"], r["pairs_per_s"]))
    for label, pts in series.items():
        ax.plot(*zip(*sorted(pts)), "-o", label=label)
    never = [n for n, v in ORIGINAL.items() if v is None]
    for n in never:
        ax.axvline(n, color="grey", lw=0.8, ls=":")
        ax.text(n, 0.03, f"original: no step at n={n}", transform=ax.get_xaxis_transform(), rotation=90,
                va="bottom", ha="right", fontsize=8, color="grey")  # x in data, y in axes: a log axis has no 0
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("n (net [n, n, 1] on 10 inputs)")
    ax.set_ylabel("pairs/s (predict + backprop per row)")
    ax.set_title("neuromesh scaling against the original")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description="Pairs/s of [n, n, 1] trained online, grouped and per-neuron.")
    ap.add_argument("--quick", action="store_true", help="small n only, 1 s each")
    ap.add_argument("--png", metavar="PATH", help="write a log-log plot here (needs matplotlib)")
    ap.add_argument("--json", metavar="PATH", help="write the result rows here")
    ap.add_argument("--seconds", type=float, help="timed seconds per measurement (default 3, quick 1)")
    args = ap.parse_args(argv)
    kw = {"seconds": 1.0, "ns_grouped": QUICK_GROUPED, "ns_neuron": QUICK_NEURON} if args.quick else {}
    if args.seconds:
        kw["seconds"] = args.seconds
    def log(s):  # progress on stderr, apart from the table; stamped like the library's warnings
        print(f"{time.strftime('%H:%M:%S')} {s}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    rows = run(log=log, **kw)
    wall = time.perf_counter() - t0
    print(table(rows))
    print(f"whole run: {wall:.1f}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "wall_s": wall, "original": {str(k): v for k, v in ORIGINAL.items()}}, f,
                      indent=1)
    if args.png:
        print(f"plot: {plot(rows, args.png) or 'skipped (matplotlib not installed)'}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
