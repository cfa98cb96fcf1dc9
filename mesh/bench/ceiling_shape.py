"""The per-neuron shape the ceiling bench measures ([10, n, n, 1]: layers A and B of n
processes, the output O, the driver D), what each process sends on once it has a pass's parts,
and what the driver must get back: shared by every design (ceiling.py, ceiling_shm.py)."""
import os
import time

import numpy as np

WAIT = 30.0  # seconds: a bound against hangs, never reached when all is well


def count(role, n):
    return n if role in "AB" else 1


NEIGHBOURS = {"D": "AO", "A": "DB", "B": "AO", "O": "BD"}  # the layers a process exchanges with, both ways


def peers(role, n):
    return [(r, i) for r in NEIGHBOURS[role] for i in range(count(r, n))]


def fan_in(role, p, n):
    """Parts a process of this role waits for in pass p (odd: forward, even: backward)."""
    fwd = p % 2 == 1
    return {"A": 1 if fwd else n, "B": n if fwd else 1, "O": n if fwd else 1, "D": 1 if fwd else n}[role]


def react(role, idx, n, p, got):
    """What a process sends on once it has all the parts of pass p: (to whom, values,
    one value per consumer?). Integer-valued float64 sums are exact in any order."""
    fwd = p % 2 == 1
    if role == "A":
        return ("B" if fwd else "D"), np.array([got.sum() + idx]), False
    if role == "B":
        return ("O", np.array([got.sum() + idx]), False) if fwd else ("A", got[0] * (idx + 1) + np.arange(n), True)
    return ("D", np.array([got.sum()]), False) if fwd else ("B", np.array(got[:1]), False)


def pair_inputs(k):
    """The 10 inputs and the target of pair k; its passes are 2k+1 (forward) and 2k+2 (backward)."""
    return np.arange(10.0) + k, np.array([float(k % 7 + 1)])


def expected(n, k):
    """What O sends back and what each A sends back in pair k, computed in this process."""
    x, t = pair_inputs(k)
    a = [react("A", i, n, 2 * k + 1, x)[1] for i in range(n)]
    b = [react("B", j, n, 2 * k + 1, np.concatenate(a))[1] for j in range(n)]
    o = react("O", 0, n, 2 * k + 1, np.concatenate(b))[1][0]
    h = np.array([react("B", j, n, 2 * k + 2, t)[1] for j in range(n)])
    return o, np.array([react("A", i, n, 2 * k + 2, h[:, i])[1][0] for i in range(n)])


def check_alive(kids, deadline):
    """Raises when a child has died (its traceback is on stderr) or the deadline passed."""
    for key, pid in kids.items():
        if os.waitpid(pid, os.WNOHANG)[0]:
            raise RuntimeError(f"process {key[0]}{key[1]} (pid {pid}) died")
    if time.monotonic() > deadline:
        raise TimeoutError("a pass did not complete in time")
    return True
