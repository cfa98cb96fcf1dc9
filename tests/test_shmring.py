"""mesh.bench.shmring's shm ring at hops=3: every trip comes back once, in order, with
its own payload (a skipped or doubled trip is refused by a relay or the driver), and
the run leaves no process and no /dev/shm file behind. No timing is asserted: the
timeouts only bound a hang."""
import glob
import json
import os
import signal
import subprocess
import sys

import pytest

HOPS, TRIPS, SIZE = 3, 50, 1024


def payload(k):
    """Trip k's message, computed here independently of the bench: bytes (k + i) % 251."""
    return bytes((k + i) % 251 for i in range(SIZE))


def test_every_trip_comes_back_whole():
    proc = subprocess.Popen([sys.executable, "-m", "mesh.bench.shmring", "--hops", str(HOPS), "--check", str(TRIPS),
                             "--bytes", str(SIZE)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)  # its own group: all of it ends
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    back = json.loads(out)
    assert [k for k, _ in back] == list(range(TRIPS))
    for k, body in back:
        assert bytes.fromhex(body) == payload(k), f"trip {k}"
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # no relay outlived the run
    assert not glob.glob(f"/dev/shm/shmring-{proc.pid}*")
