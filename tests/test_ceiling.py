"""mesh.bench.ceiling at a tiny n: every design carries every part of every pass
exactly once (a lost part hangs the pass, a doubled one changes a sum or is refused),
and leaves no process and no /dev/shm file behind. No timing is asserted: the
timeouts only bound a hang."""
import glob
import json

import numpy as np
import pytest

from benchrun import group_gone, run_bench
from mesh.bench.ceiling import HDR, DESIGNS, Inbox

N, PAIRS = 3, 5


def want(n, k):
    """What O and each A send back in pair k, summed here, independently of the bench."""
    x = [float(v + k) for v in range(10)]
    a = [sum(x) + i for i in range(n)]
    b = [sum(a) + j for j in range(n)]
    t = float(k % 7 + 1)
    return [sum(b), [sum(t * (j + 1) + i for j in range(n)) + i for i in range(n)]]


@pytest.mark.parametrize("design", DESIGNS)
def test_every_pass_arrives_whole(design):
    code, out, err, pid = run_bench("mesh.bench.ceiling", "--n", N, "--check", PAIRS, "--designs", design, timeout=90)
    assert code == 0, err
    assert json.loads(out)[design] == [want(N, k) for k in range(PAIRS)]
    assert group_gone(pid)  # no child of the run outlived it
    assert not glob.glob(f"/dev/shm/ceil-{pid}-*")


def part(p, src, value):
    return HDR.pack(p, src, 0) + np.array([value]).tobytes()


def test_a_doubled_part_does_not_pass_unseen():
    inbox = Inbox("B", 0, 3)  # forward: a part from each of 3 A's
    assert inbox.file(part(1, 0, 1.0)) is None
    assert inbox.file(part(1, 0, 1.0)) is None  # doubled, and A1's part lost: the row completes wrong
    p, row = inbox.file(part(1, 2, 3.0))
    assert p == 1 and row.sum() != 1.0 + 2.0 + 3.0
    with pytest.raises(RuntimeError):
        inbox.file(part(1, 1, 2.0))  # the lost part, late: a part of a pass already done
