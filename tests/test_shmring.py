"""mesh.bench.shmring's shm ring at hops=3: every trip comes back once, in order, with
its own payload (a skipped or doubled trip is refused by a relay or the driver), and
the run leaves no process and no /dev/shm file behind. No timing is asserted: the
timeouts only bound a hang."""
import glob
import json

from benchrun import group_gone, run_bench

HOPS, TRIPS, SIZE = 3, 50, 1024


def payload(k):
    """Trip k's message, computed here independently of the bench: bytes (k + i) % 251."""
    return bytes((k + i) % 251 for i in range(SIZE))


def test_every_trip_comes_back_whole():
    code, out, err, pid = run_bench("mesh.bench.shmring", "--hops", HOPS, "--check", TRIPS, "--bytes", SIZE,
                                    timeout=60)
    assert code == 0, err
    back = json.loads(out)
    assert [k for k, _ in back] == list(range(TRIPS))
    for k, body in back:
        assert bytes.fromhex(body) == payload(k), f"trip {k}"
    assert group_gone(pid)  # no relay outlived the run
    assert not glob.glob(f"/dev/shm/shmring-{pid}*")
