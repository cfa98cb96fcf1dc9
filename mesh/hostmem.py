"""A worker's memory budget when none is given: what its memory cgroup allows
(v1 memory.limit_in_bytes, v2 memory.max, the tightest of its own cgroup and
every ancestor), or what the host has available at start (MemAvailable),
whichever is less, less a margin for what the model does not see (the
kernel's page tables and socket buffers, a burst of messages).

Workers on one host that took their budget from the same cgroup (or from
the host's memory) share it: the broker divides the pool among them
(`pool` names it)."""
import os
import socket

V1 = "/sys/fs/cgroup/memory"
V2 = "/sys/fs/cgroup"
MARGIN = 0.10       # of the room found...
MIN_MARGIN = 64 << 20  # ...and never less than this many bytes
UNLIMITED = 1 << 60  # v1 writes "no limit" as a huge number near 2^63


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _ancestors(root, rel):
    """root/rel, then each folder above it up to root (a limit set anywhere above binds too)."""
    parts = [p for p in rel.split("/") if p]
    return [os.path.join(root, *parts[:i]) for i in range(len(parts), -1, -1)]


def cgroup_limit(proc_cgroup="/proc/self/cgroup", v1=V1, v2=V2):
    """(bytes, cgroup path) of the tightest memory limit on this process, or (None, None)."""
    text = _read(proc_cgroup) or ""
    best, where = None, None
    for line in text.splitlines():
        hid, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if "memory" in controllers.split(","):
            root, name = v1, "memory.limit_in_bytes"
        elif hid == "0" and controllers == "":
            root, name = v2, "memory.max"
        else:
            continue
        if root == v2 and not os.path.exists(os.path.join(v2, "cgroup.controllers")):
            continue  # a hybrid host's unified tree has no memory controller: v1 holds the limit
        for folder in _ancestors(root, path):
            value = _read(os.path.join(folder, name))
            if value is None or value == "max" or not value.isdigit() or int(value) >= UNLIMITED:
                continue
            if best is None or int(value) < best:
                best, where = int(value), path
    return best, where


def mem_available(meminfo="/proc/meminfo"):
    for line in (_read(meminfo) or "").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def default_budget():
    """(bytes, where it came from, pool) for a worker started without --memory."""
    limit, path = cgroup_limit()
    avail = mem_available()
    if limit is not None and limit < avail:
        room, source, pool = limit, f"its memory cgroup's limit of {limit >> 20} MiB", f"cgroup:{path}"
    else:
        room, source, pool = avail, f"the host's {avail >> 20} MiB available", "host"
    budget = max(0, room - max(MIN_MARGIN, int(room * MARGIN)))
    return budget, f"{source}, less {round(MARGIN * 100)}% (at least {MIN_MARGIN >> 20} MiB)", \
        f"{socket.gethostname()}/{pool}"
