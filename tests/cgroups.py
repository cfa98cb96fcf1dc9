"""Memory-capped test hosts: one cgroup (v1 memory controller) per host,
made and removed by the test. A process over its host's cap is killed by the
kernel (exit 137), as it would be on a real host of that size."""
import os
import threading
import time

ROOT = "/sys/fs/cgroup/memory"


def why_not():
    """None when memory cgroups can be made here, else why not."""
    if os.geteuid() != 0:
        return "memory cgroups need root"
    if not os.path.isfile(os.path.join(ROOT, "memory.limit_in_bytes")):
        return f"no cgroup v1 memory controller at {ROOT}"
    probe = os.path.join(ROOT, f"mesh-probe-{os.getpid()}")
    try:
        os.mkdir(probe)
        os.rmdir(probe)
    except OSError as e:
        return f"cannot make a memory cgroup: {e}"
    return None


class Cap:
    """A memory cgroup of `limit` bytes; run() prefixes a command so that it starts inside it."""

    def __init__(self, name, limit):
        self.path = os.path.join(ROOT, f"mesh-test-{os.getpid()}-{name}")
        self.limit = limit
        os.mkdir(self.path)
        with open(os.path.join(self.path, "memory.limit_in_bytes"), "w") as f:
            f.write(str(limit))

    def enter(self):
        """A command prefix that moves the process into this cgroup, then runs the rest
        (its children inherit the cgroup)."""
        return ["sh", "-c", f'echo $$ > {self.path}/cgroup.procs && exec "$@"', "sh"]

    def read(self, name):
        with open(os.path.join(self.path, name)) as f:
            return int(f.read())

    def peak(self):
        return self.read("memory.max_usage_in_bytes")

    def stat(self, name):
        """A field of memory.stat, e.g. "total_rss" (anonymous memory; the page cache is "total_cache")."""
        with open(os.path.join(self.path, "memory.stat")) as f:
            return int(dict(line.split() for line in f if line.strip())[name])

    def oom_kills(self):
        """Processes the kernel killed for going over the cap."""
        with open(os.path.join(self.path, "memory.oom_control")) as f:
            fields = dict(line.split() for line in f if line.strip())
        return int(fields.get("oom_kill", 0))

    def pids(self):
        with open(os.path.join(self.path, "cgroup.procs")) as f:
            return [int(p) for p in f.read().split()]

    def remove(self):
        """Once its processes are gone (the caller ends them first)."""
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.rmdir(self.path)


class Sampler:
    """The most anonymous memory (total_rss: not the page cache, which the kernel reclaims at
    the cap) each cap held, and each process's (Pss_Anon), sampled every `every` seconds (for
    the report only: no assertion depends on when a sample falls)."""

    def __init__(self, caps, every=0.1):
        self.caps, self.every = caps, every
        self.peak = {cap.path: 0 for cap in caps}
        self.anon = {}  # pid -> the most anonymous memory it held (Pss_Anon: its share of pages it
                        # shares with its spawner, as the model counts; not the files it maps)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.done.wait(self.every):
            for cap in self.caps:
                try:
                    self.peak[cap.path] = max(self.peak[cap.path], cap.stat("total_rss"))
                    pids = cap.pids()
                except (OSError, KeyError):
                    continue
                for pid in pids:
                    try:
                        with open(f"/proc/{pid}/smaps_rollup") as f:
                            anon = next(int(line.split()[1]) << 10 for line in f if line.startswith("Pss_Anon:"))
                    except (OSError, StopIteration):
                        continue
                    self.anon[pid] = max(self.anon.get(pid, 0), anon)

    def stop(self):
        self.done.set()
        self.thread.join()
        return self.peak
