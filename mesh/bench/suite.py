"""`mesh bench`: every benchmark in one run on one local mesh, as tables.
The latency part also times the online chain (online.py): both measure the hop."""
from ..localmesh import LocalMesh
from . import latency, online, throughput
from .common import table


def run(parts=("throughput", "latency"), rounds=3, quick=False, log=print):
    out = {}
    with LocalMesh(workers=2, timeout=600) as client:
        if "throughput" in parts:
            log("training throughput ([784,1024,1024,10] relu/softmax, float32, as a chain and as a graph whose "
                "output reads layers 2, 1 and the rows; small [64,256,256,10]):")
            rows = throughput.run(client, rounds=1 if quick else rounds, rows=2048 if quick else 8192, log=log)
            out["throughput"] = table(throughput.COLUMNS, [[r[c] for c in throughput.COLUMNS] for r in rows])
        if "latency" in parts:
            log("predict latency:")
            rows = latency.run(client, n=100 if quick else 500, log=log)
            out["latency"] = table(latency.COLUMNS, [[r[c] for c in latency.COLUMNS] for r in rows])
            log("online training, one row a step ([n, n, 1] on 10 inputs, train(batch_size=1)):")
            rows = online.run(client, rounds=1 if quick else rounds, rows=256 if quick else 1024, log=log)
            out["online"] = table(online.COLUMNS, [[r[c] for c in online.COLUMNS] for r in rows])
        if "resident" in parts:
            from . import resident
            log("training data resident against broker-fed, [10, 100, 100, 1] groups, train(batch_size=1):")
            rows = resident.run(client, rounds=1 if quick else max(rounds, 5), rows=256 if quick else 1024, log=log)
            out["resident"] = table(resident.COLUMNS, [[r[c] for c in resident.COLUMNS] for r in rows])
        if "sklearn" in parts:
            from . import sklearn
            log("digits, hidden (64,), 100 iterations, the same split: fit against scikit-learn's MLPClassifier:")
            rows = sklearn.run(client, rounds=1 if quick else max(rounds, 5), iterations=10 if quick else 100, log=log)
            out["sklearn"] = table(sklearn.COLUMNS, [[r[c] for c in sklearn.COLUMNS] for r in rows])
            log(f"  a local mesh of 2 workers starts in {sklearn.mesh_start_seconds():.2f} s (once per process)")
    if "dashboard" in parts:
        from . import dashboard
        log("broker throughput, dashboard closed and open:")
        rows = dashboard.run(rounds=rounds, quick=quick, log=log)
        out["dashboard"] = table(dashboard.COLUMNS, [[r[c] for c in dashboard.COLUMNS] for r in rows])
    if "failover" in parts:
        from . import failover
        log("a broker pair: its cost, and failovers (kill -9 of the active broker):")
        rows = failover.run(rounds=rounds, quick=quick, log=log)
        out["failover"] = table(failover.COLUMNS, [[r[c] for c in failover.COLUMNS] for r in rows])
    if "dataplane" in parts:
        from . import dataplane
        log("what one data message costs (N upstream groups' parts into one neuron, a process each; the group's "
            f"loop compiled and pure Python, and a bare pyzmq PUSH -> PULL, alternating; target <= "
            f"{dataplane.TARGET_US:g} us):")
        rows = dataplane.run(rounds=1 if quick else rounds, passes=50 if quick else 200, log=log)
        out["dataplane: CPU per data message"] = table(dataplane.COLUMNS, [[r[c] for c in dataplane.COLUMNS]
                                                                          for r in rows])
        out["dataplane: where a message's CPU goes (one process, inproc, fan-in 100)"] = table(
            dataplane.BREAKDOWN_COLUMNS, [[r[c] for c in dataplane.BREAKDOWN_COLUMNS]
                                          for r in dataplane.breakdown_table(passes=50 if quick else 200)])
        from . import targets
        log("the data plane's targets, one local mesh whose workers have memory budgets (per neuron and group mode):")
        rows, note = targets.run(rounds=1 if quick else rounds, quick=quick, log=log)
        out["dataplane: targets (" + note + ")"] = table(targets.COLUMNS, [[r[c] for c in targets.COLUMNS] for r in rows])
    if "ceiling" in parts:
        n, rounds_, seconds = (10, 1, 1.0) if quick else (100, rounds, 4.0)
        log(f"the transport's ceiling for a bare per-neuron [10, {n}, {n}, 1] mesh (no neural network: push, one "
            "connection per pair, pub, shared-memory boards):")
        title, text = _apart(3600, "mesh.bench.ceiling", "--n", n, "--rounds", rounds_, "--seconds", seconds)
        out[f"ceiling: {title}"] = text
    if "shmring" in parts:
        log("a ring of four processes, a hop as a zmq message or as a shared-memory slot and an eventfd wake:")
        title, text = _apart(1800, "mesh.bench.shmring", "--rounds", 1 if quick else rounds,
                             "--trips", 200 if quick else 2000)
        out[f"shmring: {title}"] = text
    if "scaling" in parts:
        from . import scaling
        log("scaling ([n, n, 1] on 10 inputs, online):")
        rows = scaling.run(**(dict(ns_grouped=(5, 50, 400), ns_neuron=(1, 8), seconds=1.0) if quick else {}), log=log)
        out["scaling"] = scaling.table(rows)
    return out


def _apart(timeout, module, *args):
    """A bare benchmark that forks its own processes, run in a process of its own (one without a
    zmq context), bounded by `timeout` seconds against hangs: the first line it prints, and the
    table after it."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=True)
    title, text = done.stdout.split("\n", 1)
    return title, text.rstrip()
