"""Training throughput: the mesh against one in-process numpy program (the
reference network, BLAS on every core) and PyTorch on the CPU when it is
installed, on the same data, same initial weights and same batches, in one
run. Reported per round as rows/s and as ratios; medians with min-max."""
import time

import numpy as np

from ..reference import ReferenceNet
from .common import CpuMeter, fmt_spread, mesh_pids

WIDE = dict(sizes=[1024, 1024, 10], activation="relu", output="softmax", loss="cross_entropy")
WIDE_GRAPH = dict(WIDE, inputs={3: [2, 1, 0]})  # the same sizes; the output reads layers 2, 1 and the rows


def wide_data(rows=8192, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 784)).astype(np.float32)
    return X, np.eye(10, dtype=np.float32)[rng.integers(0, 10, rows)]


def digits_data():
    """scikit-learn's digits (1797 x 64, 10 classes) when installed, else random data of that shape."""
    try:
        from sklearn.datasets import load_digits
        d = load_digits()
        X = (d.data / 16.0).astype(np.float32)
        return X, np.eye(10, dtype=np.float32)[d.target], "digits"
    except ImportError:
        rng = np.random.default_rng(0)
        return rng.uniform(size=(1797, 64)).astype(np.float32), \
            np.eye(10, dtype=np.float32)[rng.integers(0, 10, 1797)], "random 1797x64"


def torch_trainer(layers, activation, lr):
    """A PyTorch copy of the network, or None when torch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    mods = []
    for i, (W, b) in enumerate(layers):
        lin = torch.nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.array(W)))
            lin.bias.copy_(torch.from_numpy(np.array(b)))
        mods.append(lin)
        if i < len(layers) - 1:
            mods.append({"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid}[activation]())
    model = torch.nn.Sequential(*mods)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()

    def train(X, Y, batch_size):
        Xt, yt = torch.from_numpy(X), torch.from_numpy(Y.argmax(axis=1))
        for lo in range(0, len(X), batch_size):
            opt.zero_grad()
            loss_fn(model(Xt[lo:lo + batch_size]), yt[lo:lo + batch_size]).backward()
            opt.step()
    return train


def settle():
    """Let the baselines' BLAS and OpenMP threads stop spinning before the mesh is timed:
    they busy-wait for a while after their work, on the same two cores."""
    time.sleep(1.0)


def compare(client, name, X, Y, spec, batch_size, rounds=3, lr=0.01, group_size=None, micro_batches=None,
            mode="exact", log=print):
    """One benchmark row: rows/s of mesh, numpy and torch over `rounds` rounds of one epoch each
    (torch for chains only: spec "inputs", a graph, has no nn.Sequential)."""
    graph = spec.get("inputs")
    net = client.create(spec["sizes"], activation=spec["activation"], output=spec["output"], loss=spec["loss"],
                        group_size=group_size, seed=0, inputs=graph)
    try:
        net.predict(X[:1], remember=False)
        layers = net.weights()
        ref = ReferenceNet(layers, activation=spec["activation"], output=spec["output"], loss=spec["loss"],
                           dtype=np.float32, inputs=graph)
        torch_train = torch_trainer(layers, spec["activation"], lr) if graph is None else None
        pids = mesh_pids(client, net)
        groups = {p["pid"]: p["gid"] for p in net.processes()}
        # one untimed epoch each: page faults, BLAS buffers, first messages
        net.train(X[:batch_size * 4], Y[:batch_size * 4], batch_size=batch_size, learning_rate=lr, shuffle=False,
                  micro_batches=micro_batches, mode=mode, progress=False)
        ref.train(X[:batch_size * 4], Y[:batch_size * 4], 1, batch_size, lr)
        if torch_train:
            torch_train(X[:batch_size * 4], Y[:batch_size * 4], batch_size)
        m, n, t, cores, idle, idle_ms = [], [], [], [], [], []
        steps = -(-len(X) // batch_size)
        for r in range(rounds):
            settle()
            with CpuMeter(pids) as cpu:
                net.train(X, Y, batch_size=batch_size, learning_rate=lr, shuffle=False, micro_batches=micro_batches,
                          mode=mode, progress=False)
            m.append(len(X) / cpu.wall)
            cores.append(cpu.cores)
            busiest, gid = max((c, groups[p]) for p, c in zip(pids, cpu.each) if p in groups)
            waited = max(0.0, cpu.wall - busiest)  # not running: no work, or no free core (/proc counts in ticks)
            idle.append(waited / cpu.wall)
            idle_ms.append(1e3 * waited / steps)
            s = time.perf_counter()
            ref.train(X, Y, 1, batch_size, lr)
            n.append(len(X) / (time.perf_counter() - s))
            if torch_train:
                s = time.perf_counter()
                torch_train(X, Y, batch_size)
                t.append(len(X) / (time.perf_counter() - s))
            log(f"  {name} batch {batch_size} round {r + 1}: mesh {m[-1]:,.0f} rows/s, numpy {n[-1]:,.0f}"
                + (f", torch {t[-1]:,.0f}" if t else "") + f"; mesh kept {cores[-1]:.2f} cores busy; "
                f"busiest group {gid} idle {idle[-1]:.0%} ({idle_ms[-1]:.2f} ms per mini-batch)")
    finally:
        net.drop()
    row = {"bench": name + ("" if mode == "exact" else f" {mode}"), "batch": batch_size,
           "group_size": group_size or "layer",
           "mesh rows/s": fmt_spread(m), "numpy rows/s": fmt_spread(n),
           "mesh/numpy": fmt_spread([a / b for a, b in zip(m, n)]), "cores busy": fmt_spread(cores),
           "bottleneck": gid, "idle share": fmt_spread(idle), "idle ms/batch": fmt_spread(idle_ms)}
    row["torch rows/s"] = fmt_spread(t) if t else "not installed" if graph is None else "-"
    row["mesh/torch"] = fmt_spread([a / b for a, b in zip(m, t)]) if t else "-"
    return row


def run(client, rounds=3, rows=8192, log=print):
    X, Y = wide_data(rows)
    out = [compare(client, "wide", X, Y, WIDE, bs, rounds, log=log) for bs in (256, 32)]
    # beside the required rows: layer 2 cut in two (the pipeline's heaviest stage), and async mode
    out.append(compare(client, "wide", X, Y, WIDE, 256, rounds, group_size=512, log=log))
    out.append(compare(client, "wide", X, Y, WIDE, 256, rounds, mode="async", log=log))
    out.append(compare(client, "wide graph 3=2,1,0", X, Y, WIDE_GRAPH, 256, 1, log=log))  # beside the chain, one run
    Xd, Yd, what = digits_data()
    small = dict(sizes=[256, 256, 10], activation="relu", output="softmax", loss="cross_entropy")
    out.append(compare(client, f"small ({what})", Xd, Yd, small, 32, rounds, log=log))
    return out


COLUMNS = ["bench", "batch", "group_size", "mesh rows/s", "numpy rows/s", "mesh/numpy", "torch rows/s", "mesh/torch",
           "cores busy", "bottleneck", "idle share", "idle ms/batch"]
