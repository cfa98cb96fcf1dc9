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


def pss_bytes(pid):
    """Proportional resident memory of one process: its private pages and its share of
    the pages it shares (forked groups share numpy's and zmq's): summed over processes,
    what their memory cgroup is charged. Falls back to RSS where the kernel has no
    smaps_rollup; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return 0
    except OSError:
        pass
    return rss_bytes(pid)


def state(pid):
    """The process's state letter (R running, S sleeping, D disk, T stopped, Z zombie), or "" if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return ""


class Meter:
    """Per process: cores kept busy since its last reading, proportional resident bytes
    (pss_bytes) and its state letter."""

    def __init__(self):
        self.last = {}  # pid -> (CPU seconds, monotonic time) at its last reading
        self.cursor = ""  # read_some: the name it read last

    def read(self, pid):
        cpu, now = cpu_seconds(pid), time.monotonic()
        before = self.last.get(pid)
        self.last[pid] = (cpu, now)
        busy = (cpu - before[0]) / (now - before[1]) if before and now > before[1] else 0.0
        return [round(busy, 3), pss_bytes(pid), state(pid)]

    def read_all(self, pids):
        """{name: [cores, bytes, state]} for {name: pid}; forgets processes no longer asked about."""
        out = {name: self.read(pid) for name, pid in pids.items()}
        live = set(pids.values())
        self.last = {pid: v for pid, v in self.last.items() if pid in live}
        return out

    def read_some(self, pids, seconds, keep=()):
        """As read_all, for as many of pids as `seconds` allow (one at least), taking up where the
        last call stopped: a worker of hundreds of groups reads them over several heartbeats
        (a loaded host's /proc reads take milliseconds each), never holding its heartbeat.
        keep: pids read elsewhere, not to be forgotten."""
        names = sorted(pids)
        start = next((i for i, n in enumerate(names) if n > self.cursor), 0)
        deadline, out = time.monotonic() + seconds, {}
        for name in names[start:] + names[:start]:
            out[name] = self.read(pids[name])
            self.cursor = name
            if time.monotonic() > deadline:
                break
        live = set(pids.values()) | set(keep)
        self.last = {pid: v for pid, v in self.last.items() if pid in live}
        return out
