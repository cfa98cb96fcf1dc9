"""CPU and memory of processes, read from Linux's /proc: what `mesh bench`
accounts and what workers report of their groups in their heartbeats."""
import os
import time

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid):
    """User + system CPU seconds of one process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the name, in parentheses, may hold spaces
        return (int(fields[11]) + int(fields[12])) / TICK
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def rss_bytes(pid):
    """Resident memory of one process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (FileNotFoundError, ProcessLookupError):
        return 0


class Meter:
    """Per process: cores kept busy since its last reading, and resident bytes."""

    def __init__(self):
        self.last = {}  # pid -> (CPU seconds, monotonic time) at its last reading

    def read(self, pid):
        cpu, now = cpu_seconds(pid), time.monotonic()
        before = self.last.get(pid)
        self.last[pid] = (cpu, now)
        busy = (cpu - before[0]) / (now - before[1]) if before and now > before[1] else 0.0
        return [round(busy, 3), rss_bytes(pid)]

    def read_all(self, pids):
        """{name: [cores, bytes]} for {name: pid}; forgets processes no longer asked about."""
        out = {name: self.read(pid) for name, pid in pids.items()}
        live = set(pids.values())
        self.last = {pid: v for pid, v in self.last.items() if pid in live}
        return out
