"""A worker: one per machine (or slice of one). It registers with the broker,
heartbeats, starts and ends group processes on the broker's word (through
its spawner), and reports every group exit at once."""
import logging
import os
import shutil
import socket
import time

import zmq

from . import group  # noqa: F401  loaded here, so forked groups start without importing anything
from . import heartbeat, hostmem, settings, sockets, staging, wire
from .brokers import Brokers
from .sizes import format_size
from .procstat import Meter
from .lograte import Sometimes
from .spawner import Spawner

USAGE_SLICE = 0.05  # seconds of /proc reads of its groups' usage one heartbeat may take (Meter.read_some)

log = logging.getLogger("mesh.worker")


def route_address(broker_host):
    """The local address this host uses to reach the broker: what peers should dial."""
    if broker_host in ("127.0.0.1", "localhost", "::1"):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((broker_host, 9))  # UDP connect sends nothing; it only picks a route
        return s.getsockname()[0]


class Worker:
    def __init__(self, broker, advertise=None, listen=None, slots=None, keys=None, say=None, memory=None,
                 state_dir=None, disk=None):
        self.keys = keys
        self.say = say or (lambda line: None)  # a line for the person who started it
        self.brokers = Brokers(broker)  # one, or a pair: it moves to the other when one goes silent
        self.broker_host = sockets.host_of(self.brokers.current)
        self.advertise = advertise or route_address(self.broker_host)
        self.listen = listen or self.advertise
        self.slots = slots or os.cpu_count()
        # bytes its groups and itself may hold: as given, else what its cgroup or host allows (hostmem.py)
        if memory:
            self.memory, self.memory_from, self.pool = memory, "given with --memory", None
        else:
            self.memory, self.memory_from, self.pool = hostmem.default_budget()
        # its groups' snapshot files (keeper.py), in a folder of its own, removed when it ends
        self.state_dir = os.path.join(state_root(state_dir), f"worker-{os.getpid()}-{os.urandom(4).hex()}")
        self.disk, self.disk_pool = disk, None
        self.ipc_dir = sockets.abstract_ipc("worker")[len("ipc://"):]  # its groups' unix sockets are named under it
        # one identity for the worker's life: after a reconnect the broker knows it is the same worker
        self.identity = f"worker-{socket.gethostname()}-{os.getpid()}-{os.urandom(4).hex()}".encode()
        self.groups = {}  # gid -> pid
        self.meter = Meter()
        self.sometimes = Sometimes(log)  # what bad messages log
        self.running = True
        self.welcomed = False  # the broker has answered this connection
        self.epoch = 0  # the highest broker epoch heard: orders from an older (replaced) broker are ignored
        self.fled = -heartbeat.EXPIRY  # when it last left a broker that went silent

    def run(self):
        self.say(f"mesh worker: pid {os.getpid()}, {self.slots} slots, memory {format_size(self.memory)} "
                 f"({self.memory_from}), advertising {self.advertise}; joining the broker at {self.brokers}")
        sockets.limit_to(self.memory)  # before the spawner forks: its groups inherit the limits
        os.makedirs(self.state_dir, mode=0o700)
        try:
            self.disk, self.disk_pool = disk_budget(self.state_dir, self.disk)
            self.spawner = Spawner(self.state_dir)  # fork before any zmq context exists
            self.ctx = zmq.Context()
            try:
                self._loop()
            finally:
                self.spawner.close()
                self.ctx.destroy(linger=0)
        finally:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def _connect(self):
        self.sock = sockets.make(self.ctx, zmq.DEALER, keys=self.keys, dial=self.keys and self.keys.broker_public)
        self.sock.setsockopt(zmq.ROUTING_ID, self.identity)
        # a broker's host closes the connection when it dies: with a pair, move at once (monitor)
        self.monitor = self.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.monitor.setsockopt(zmq.LINGER, 0)
        self.sock.connect(self.brokers.current)
        self.peer = heartbeat.Peer()
        self.inbox = None
        self.welcomed = False
        self.refused = False  # a standby said its peer, the active broker, is alive
        self._register()

    def _register(self):
        sockets.send(self.sock, {"k": wire.REGISTER, "host": self.advertise, "hostname": socket.gethostname(),
                                 "slots": self.slots, "memory": self.memory, "pool": self.pool, "disk": self.disk,
                                 "disk_pool": self.disk_pool, "pid": os.getpid(),
                                 "groups": self.groups,
                                 "key": self.keys.public.decode() if self.keys else None})

    def _disconnected(self):
        return zmq.EVENT_DISCONNECTED in sockets.monitor_events(self.monitor) and self.brokers.pair

    def _loop(self):
        backoff = heartbeat.Backoff()
        self._connect()
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.spawner.fileno(), zmq.POLLIN)
        while self.running:
            events = dict(poller.poll(heartbeat.INTERVAL * 1000 / 4))
            if self.sock in events:
                self._receive(backoff)
            if self.spawner.fileno() in events:
                for ev in self.spawner.events():
                    self._report(ev)
            due = self.peer.due()
            if due and not self.welcomed:
                self._register()  # again: a standby answers it once it has taken over
            elif due:  # with the CPU and memory of each group, for the dashboard
                mine = (os.getpid(), self.spawner.pid)
                own, nanny = (self.meter.read(pid) for pid in mine)
                use = self.meter.read_some(self.groups, USAGE_SLICE, keep=mine)
                own[1] += nanny[1]  # the spawner is the worker's own: its memory is counted with the worker's
                sockets.send(self.sock, {"k": wire.HEARTBEAT, "usage": own, "groups": use,
                                         "load": os.getloadavg()[0] / os.cpu_count()})  # runnable per core
            if self._disconnected():  # give zmq's own reconnect two heartbeats before moving on
                self.peer.heard = min(self.peer.heard, time.monotonic() - self.peer.expiry + 2 * heartbeat.INTERVAL)
            if self.peer.expired() or self.refused:
                if not self.refused:
                    self.fled = time.monotonic()
                was = self.brokers.current
                round_done = self.brokers.next()  # a pair: the other broker, at once (its vote for a failover)
                delay = backoff.next() if round_done else 0.0
                if self.refused:
                    self.say(f"mesh worker: the broker at {was} is the standby; trying {self.brokers.current} "
                             f"in {delay:.0f}s")
                elif self.welcomed:
                    self.say(f"mesh worker: the broker at {was} stopped answering; "
                             f"reconnecting to {self.brokers.current} in {delay:.0f}s")
                else:
                    self.say(f"mesh worker: no broker answers at {was} (is it running, and are the address "
                             f"and keys right?); trying {self.brokers.current} in {delay:.0f}s")
                poller.unregister(self.sock)
                self.sock.disable_monitor()
                self.monitor.close()
                self.sock.close()
                time.sleep(delay)
                self._connect()
                poller.register(self.sock, zmq.POLLIN)

    def _receive(self, backoff):
        """One message from the broker; a malformed one, or one that fails, is logged and dropped."""
        try:
            _, h, arrays = sockets.recv(self.sock)
            if self._current(h):  # a replaced broker is no sign of life either
                self.peer.heard_now()
                backoff.reset()
                self._handle(h, arrays)
        except Exception as e:
            self.sometimes.warning(type(e).__name__, "refused a message from the broker: %s: %s", type(e).__name__,
                                   str(e)[:500])

    def _current(self, h):
        """From the broker it follows: one of the highest epoch heard (a replaced one must not
        start or end anything), or the one that welcomes this connection (it may be a pair
        started afresh, at a lower epoch)."""
        ep = h.get("ep", 0)
        if type(ep) is not int:
            raise ValueError(f"epoch {ep!r}")
        return ep >= self.epoch or (h["k"] == wire.WELCOME and not self.welcomed)

    def _handle(self, h, arrays=()):
        k = h["k"]
        self.epoch = h.get("ep", 0)
        if k == wire.STANDBY:  # it is the standby of a pair: go back to the other, unless it is taking over
            # (the one we just left for dead still looks alive to it for a moment: stay then)
            self.refused = bool(h.get("peer_alive")) and time.monotonic() - self.fled > heartbeat.EXPIRY
        elif k == wire.WELCOME:
            if not self.welcomed:
                self.say(f"mesh worker: registered with the broker at {self.brokers.current}")
                self.welcomed = True
            host = sockets.host_of(self.brokers.current)
            self.inbox = sockets.nearest(f"tcp://{host}:{h['inbox_port']}", h.get("inbox_ipc"), host == self.advertise)
        elif k == wire.SPAWN:
            config = dict(h["config"], broker_inbox=self.inbox, listen=self.listen,
                          advertise=self.advertise, ipc_dir=self.ipc_dir, state_dir=self.state_dir,
                          keys=str(self.keys.dir.absolute()) if self.keys else None)  # security.Keys.from_config
            self.spawner.spawn(config["gid"], config)
        elif k == wire.KILL:
            self.spawner.kill(h["gid"], sig=int(h.get("sig", 15)), pid=h.get("pid"))
        elif k == wire.STOP:
            self.running = False
        elif k == wire.STAGE:  # a resident run's data, one part (staging.py); removed with the folder at exit
            if staging.stage(self.state_dir, h, arrays):
                sockets.send(self.sock, {"k": wire.STAGED, "net": h.get("net"), "name": h["name"],
                                         "part": h["part"]})
        elif k == wire.UNSTAGE:
            staging.unstage(self.state_dir, h["name"])

    def _report(self, ev):
        if ev["op"] == "spawned":
            self.groups[ev["gid"]] = ev["pid"]
            sockets.send(self.sock, {"k": wire.SPAWNED, "gid": ev["gid"], "pid": ev["pid"]})
        else:
            self.groups.pop(ev["gid"], None)
            sockets.send(self.sock, {"k": wire.EXITED, "gid": ev["gid"], "pid": ev["pid"], "code": ev["code"]})


def state_root(given=None):
    """Where workers keep their state folders: given, else $XDG_STATE_HOME/neuromesh
    (~/.local/state/neuromesh)."""
    if given:
        return os.path.abspath(given)
    base = settings.state_home() or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "neuromesh")


DISK_MARGIN = 0.10  # of the free space found at start


def disk_budget(folder, given=None):
    """(bytes its groups' snapshot files may take, pool): given, else the free space of the
    folder's file system at start less DISK_MARGIN, shared with the workers on that file system."""
    if given:
        return given, None
    st = os.statvfs(folder)
    return int(st.f_bavail * st.f_frsize * (1 - DISK_MARGIN)), f"{socket.gethostname()}/dev{os.stat(folder).st_dev}"


def main(broker, advertise=None, listen=None, slots=None, keys=None, say=None, memory=None, state_dir=None,
         disk=None):
    Worker(broker, advertise, listen, slots, keys, say, memory, state_dir, disk).run()
