"""What every benchmark shares: rounds, medians with min-max, CPU accounting
from /proc, and a plain-text table."""
import statistics
import time

from ..procstat import cpu_seconds


def mesh_pids(client, net):
    """The broker, the workers and every group process of one network."""
    s = client.status()
    return [s["broker"]["pid"]] + [w["pid"] for w in s["workers"]] + [p["pid"] for p in net.processes()]


class CpuMeter:
    """Cores kept busy inside the with block: CPU seconds / wall seconds; and each
    pid's own CPU seconds (`each`), to find the busiest process."""

    def __init__(self, pids):
        self.pids = pids

    def __enter__(self):
        self.t = time.perf_counter()
        self.start = [cpu_seconds(p) for p in self.pids]
        self.c = sum(self.start) + time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t
        self.each = [cpu_seconds(p) - c0 for p, c0 in zip(self.pids, self.start)]
        self.cores = (sum(self.each) + sum(self.start) + time.process_time() - self.c) / self.wall


def predict_seconds(net, row, n, warm):
    """Seconds each of n predicts of one row took (after warm ones, not timed)."""
    for _ in range(warm):
        net.predict(row, remember=False)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        net.predict(row, remember=False)
        times.append(time.perf_counter() - t)
    return times


def spread(values):
    """'median (min-max)' of a list of numbers."""
    med = statistics.median(values)
    return med, min(values), max(values)


def fmt_spread(values, digits=2):
    med, lo, hi = spread(values)
    if med >= 100:
        return f"{med:,.0f} ({lo:,.0f}-{hi:,.0f})"
    return f"{med:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def table(header, rows):
    """A plain-text table; rows are lists of strings."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def main_table(run, columns):
    """`python -m mesh.bench.X`: one benchmark's table alone, on a local mesh of two workers."""
    from ..localmesh import LocalMesh
    with LocalMesh(workers=2, timeout=600) as client:
        rows = run(client)
    print(table(columns, [[r[c] for c in columns] for r in rows]))
