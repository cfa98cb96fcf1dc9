"""Exact training under SIGKILL of 10 group processes and 2 whole workers (issue 6's chaos run)."""
from mesh.bench.chaos import run

if __name__ == "__main__":
    run(group_kills=10, worker_kills=2)
