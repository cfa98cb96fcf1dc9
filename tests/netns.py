"""Test hosts on one machine: Linux network namespaces joined by a bridge.

Host 0 holds the bridge and runs the broker; hosts 1..n are workers. Each
gets its own address in 10.213.<net>.0/24, reachable only between these
namespaces. Everything is created by the test and removed in close(),
processes first (by process group), even when the test fails."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time


def can_make_namespaces():
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"mprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def wait_for_workers(hosts, broker, n, timeout=60, env=None):
    """`mesh status --json` from host 0 once n workers have joined (polled; the deadline bounds a hang)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = hosts.run(0, sys.executable, "-m", "mesh", "status", "--json", "--broker", broker, "--timeout", "2",
                      env=env)
        if r.returncode == 0 and len(json.loads(r.stdout)["workers"]) == n:
            return json.loads(r.stdout)
        time.sleep(0.3)
    raise AssertionError(f"{n} workers did not join {broker}: {r.stderr}")


def ip(*args):
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


class Hosts:
    def __init__(self, n_workers):
        tag = os.getpid() % 10000
        self.subnet = f"10.213.{os.getpid() % 250}"
        self.names = [f"mh{tag}x{i}" for i in range(n_workers + 1)]
        self.addrs = [f"{self.subnet}.{i + 1}" for i in range(n_workers + 1)]
        self.procs = []
        try:
            for name in self.names:
                ip("netns", "add", name)
                ip("-n", name, "link", "set", "lo", "up")
            hub = self.names[0]
            ip("-n", hub, "link", "add", "br0", "type", "bridge")
            ip("-n", hub, "addr", "add", f"{self.addrs[0]}/24", "dev", "br0")
            ip("-n", hub, "link", "set", "br0", "up")
            for i, name in enumerate(self.names[1:], 1):
                ip("link", "add", f"mv{tag}x{i}a", "netns", hub, "type", "veth", "peer", "name", "eth0", "netns", name)
                ip("-n", hub, "link", "set", f"mv{tag}x{i}a", "master", "br0")
                ip("-n", hub, "link", "set", f"mv{tag}x{i}a", "up")
                ip("-n", name, "addr", "add", f"{self.addrs[i]}/24", "dev", "eth0")
                ip("-n", name, "link", "set", "eth0", "up")
        except BaseException:
            self.close()
            raise

    def start(self, host, *args, prefix=(), **kw):
        """Start a process on host i (in its own process group). prefix: a command that
        runs first, outside the namespace (ip netns exec hides /sys/fs/cgroup)."""
        p = subprocess.Popen([*prefix, "ip", "netns", "exec", self.names[host], *args], process_group=0,
                             stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def run(self, host, *args, timeout=120, env=None):
        return subprocess.run(["ip", "netns", "exec", self.names[host], *args], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, env=env)

    def mesh(self, host, *args, **kw):
        return self.start(host, sys.executable, "-m", "mesh", *args, **kw)

    def cut(self, host):
        ip("-n", self.names[host], "link", "set", "eth0", "down")

    def close(self):
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        for name in self.names:
            # processes of ours still inside (a group that escaped its process group) go too
            r = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
            for pid in r.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
