"""Pairs/s of a [n, n, 1] net trained online, against the Elixir original.

    python benchmarks/scaling.py [--quick] [--png scaling.png] [--json scaling.json]
"""
import sys

from mesh.bench.scaling import main

if __name__ == "__main__":
    sys.exit(main())
