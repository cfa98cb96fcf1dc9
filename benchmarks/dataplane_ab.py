"""The data plane before and after, side by side: CPU per data message (dataplane.message_cost)
of another checkout of this repository (BEFORE, e.g. a worktree of main) against this one's
compiled and pure-Python paths and a bare pyzmq PUSH -> PULL, alternating in every round, each
measurement a fresh process. Medians (min-max) of the rounds.

    python benchmarks/dataplane_ab.py BEFORE [ROUNDS]"""
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAN_INS = (100, 400)


def measure(root, stmt):
    code = "import json; from mesh.bench import dataplane as d; print(json.dumps(" + stmt + "))"
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=root), cwd="/",
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(before, rounds=5):
    ways = {"before": (before, "d.message_cost({n}, 200)"),
            "compiled": (HERE, "d.message_cost({n}, 200, path='compiled')"),
            "pure Python": (HERE, "d.message_cost({n}, 200, path='pure Python')"),
            "bare pyzmq": (HERE, "d.bare_cost({n}, 200)")}
    got = {(n, way): [] for n in FAN_INS for way in ways}
    for r in range(rounds):
        for n in FAN_INS:
            for way, (root, stmt) in ways.items():
                got[(n, way)].append(measure(root, stmt.format(n=n)))
        print(f"round {r + 1} of {rounds}", file=sys.stderr)
    for (n, way), costs in got.items():
        totals = sorted(sum(c) for c in costs)
        send, receive = sorted(costs, key=sum)[len(costs) // 2]
        print(f"fan-in {n:>3}  {way:<12} {statistics.median(totals):5.1f} us ({totals[0]:.1f}-{totals[-1]:.1f})  "
              f"send {send:.1f}  receive {receive:.1f}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5)
