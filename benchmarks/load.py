"""8 concurrent clients x 500 predicts against one network (issue 6's load run)."""
from mesh.bench.load import run

if __name__ == "__main__":
    run(clients=8, n=500)
