"""A whole mesh on this machine: a broker and N workers as child processes,
all in one process group, all ended when the mesh is closed (or when this
process dies: they die with their parent)."""
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import time

from . import settings
from .client import Client
from .lifecycle import blas_env
from .sizes import parse_size


class LocalMesh:
    def __init__(self, workers=2, slots=None, blas_threads=1, timeout=60.0, bind="tcp://127.0.0.1:*",
                 start_timeout=30.0, insecure=False, env=None, dashboard="off", dashboard_token=None,
                 worker_memory=None, standby=False, worker_disk=None, keys=None):
        """dashboard: ADDR:PORT for the broker's web dashboard (port 0: any free one), "off", or None for
        the broker's default (127.0.0.1:8787, or a free port when that one is taken); see dashboard_url.
        worker_memory: each worker's memory budget (`800MiB`, or bytes), or None: they share what the
        host (or their cgroup) allows. worker_disk: likewise, the disk their snapshot files may take.
        standby: two brokers, a pair (broker/pairstate.py): the first starts active, the second is its
        standby; workers and the client know both (self.brokers: their processes).
        keys: a keys folder for the broker, the workers and the client (default: MESH_KEYS, which each reads)."""
        self.n_workers, self.slots, self.timeout = workers, slots, timeout
        self.worker_memory = worker_memory and parse_size(worker_memory)  # refused here, before anything starts
        self.worker_disk = worker_disk and parse_size(worker_disk)
        self.insecure = ["--insecure"] if insecure else []
        self.keys = keys
        self.keys_args = ["--keys", str(keys)] if keys else []  # the same path on every host it starts a worker on
        self.bind, self.start_timeout = bind, start_timeout
        self.env = blas_env(blas_threads)
        self.env[settings.DIE_WITH_PARENT] = "1"
        self.env.update(env or {})  # e.g. MESH_TEST_FAULTS (faults.py), inherited by every group
        if standby and not self.env.get(settings.PAIR_SECRET) and not insecure:
            self.env[settings.PAIR_SECRET] = secrets.token_hex(16)  # only the two brokers speak for the pair
        self.board = (["--dashboard", dashboard] if dashboard else []) + \
            (["--dashboard-token", dashboard_token] if dashboard_token else [])
        self.dashboard_url = None
        self.procs, self.pgid, self.address, self.client = [], None, None, None
        self.standby, self.brokers = standby, []

    def _spawn(self, *args, **kw):
        p = subprocess.Popen([sys.executable, "-m", "mesh", *args], env=self.env, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def start(self):
        """The broker, then the workers, then a client once every worker has joined."""
        try:
            if self.standby:
                self._start_pair()
            else:
                self.address = self.start_broker(["--bind", self.bind])
            self._start_workers()
            self.client = Client(self._client_address(), timeout=self.timeout, keys=self.keys)
            brokers = self.brokers  # a plain function: copy.deepcopy of the client (sklearn's clone) shares it
            self.client.watch = lambda: brokers_gone(brokers)
            self._wait_for_workers()
        except BaseException:
            self.stop()
            raise
        return self.client

    def start_broker(self, args):
        """One broker process (in the mesh's process group); the address it listens on."""
        broker = self._spawn("broker", *args, *self.insecure, *self.keys_args, *self.board, stdout=subprocess.PIPE,
                             process_group=self.pgid or 0)
        self.pgid = self.pgid or broker.pid
        self.brokers.append(broker)
        deadline = time.monotonic() + self.start_timeout
        address = self._dial_address(_read_line(broker, deadline).split()[-1])
        if self.board[1:2] != ["off"]:  # it prints the dashboard's URL next
            self.dashboard_url = self.dashboard_url or _read_line(broker, deadline).split()[-1]
        return address

    def _start_pair(self):
        """Two brokers on two free loopback ports, each the other's peer; once the first is
        active, workers and the client are given both addresses."""
        a, b = (f"tcp://127.0.0.1:{port}" for port in _free_ports(2))
        self.start_broker(["--bind", a, "--peer", b, "--primary"])
        self.start_broker(["--bind", b, "--peer", a])
        self.address = f"{a},{b}"
        with Client(a, timeout=self.start_timeout, keys=self.keys) as probe:
            deadline = time.monotonic() + self.start_timeout
            while (probe.status()["broker"].get("pair") or {}).get("peer_role") != "standby" or \
                    probe.status()["broker"]["pair"]["role"] != "active":
                if time.monotonic() > deadline:
                    raise TimeoutError("the primary broker did not become active, with the other its standby")
                time.sleep(0.05)

    def _dial_address(self, bound):
        """The address workers dial, from the one the broker bound."""
        return bound

    def _client_address(self):
        return self.address

    def _start_workers(self):
        extra = ["--slots", str(self.slots)] if self.slots else []
        extra += ["--memory", str(self.worker_memory)] if self.worker_memory else []
        extra += ["--disk", str(self.worker_disk)] if self.worker_disk else []
        for _ in range(self.n_workers):
            # their banner lines are for a person who runs `mesh worker`; here the launcher speaks
            self._spawn("worker", "--broker", self.address, *extra, *self.keys_args, process_group=self.pgid,
                        stdout=subprocess.DEVNULL)

    def _wait_for_workers(self):
        deadline = time.monotonic() + self.start_timeout
        while len(self.client.status()["workers"]) < self.n_workers:
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"mesh process {dead[0].args[3]} exited with code {dead[0].returncode} at start")
            if time.monotonic() > deadline:
                raise TimeoutError(f"only some of {self.n_workers} workers joined within {self.start_timeout}s")
            time.sleep(0.05)

    def pids(self):
        return [p.pid for p in self.procs]

    def stop(self):
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.pgid is None:
            return
        _signal_group(self.pgid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for p in self.procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        _signal_group(self.pgid, signal.SIGKILL)  # whatever is left, groups included
        for p in self.procs:
            p.wait()
            if p.stdout:
                p.stdout.close()
        self.pgid = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def local(workers=2, **kw):
    """`with mesh.local(workers=2) as client:` a broker and workers, ended on exit."""
    return LocalMesh(workers, **kw)


def brokers_gone(brokers):
    """Why no broker of a mesh can answer (every one's process has exited), or None."""
    codes = [p.poll() for p in brokers]
    if not codes or None in codes:
        return None
    return "the mesh's broker exited with code " + ", ".join(str(c) for c in codes)


def _free_ports(n):
    """n tcp ports free on loopback now (a broker of a pair must know the other's before either starts)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _read_line(proc, deadline):
    """A line the broker prints once bound: 'mesh broker listening on ADDR', then 'dashboard: URL'."""
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
            raise TimeoutError("the broker did not start in time")
        chunk = os.read(proc.stdout.fileno(), 1)
        if not chunk:
            raise RuntimeError(f"the broker exited at start (code {proc.wait()})")
        line += chunk
    return line.decode()
