"""Faults injected at known points, for tests and chaos drills: a group
process ends itself (or its whole worker) right after it applied step k,
when its n-th forward arrives, or when its n-th setup (its wiring) arrives. Tests then assert that the fault happened
where it says, instead of racing a timer against the machine's speed.

    MESH_TEST_FAULTS="n1.2.0@step=5,n1.1.1@fwd=7,n1.3.0@step=40:worker,n1.1.0@step=3:stop"
    MESH_TEST_FAULTS_LOG=/path/to/log   # required: one line per fault fired

The broker is "broker": broker@step=K ends it right after step K of a
training run is logged, broker@backprop=K right after it answered the
backprop that took step id K, broker@snap=K once snapshot K is sent to
every group, broker@replay=K when its K-th recovery starts replaying.

Actions: kill (the default) SIGKILLs the group; worker SIGKILLs its worker
(and so every group of it); stop SIGSTOPs the group, holding it at that
point until the test sends SIGCONT (its pid is in the log line).

Each entry fires at most once per log file: the line is written before the
kill, so the process that replaces the group (and replays step k) does not
fire it again. Groups inherit both variables from their worker; nothing
here is reachable over the network."""
import os
import signal

from . import settings

ENV, LOG_ENV = settings.TEST_FAULTS, settings.TEST_FAULTS_LOG
ACTIONS = ("kill", "worker", "stop")
EVENTS = ("step", "fwd", "setup", "snap", "replay", "backprop")  # the last three: the broker's


class Fault:
    def __init__(self, text):
        where, _, action = text.partition(":")
        self.gid, _, point = where.partition("@")
        self.event, _, count = point.partition("=")
        self.count = int(count)
        self.action = action or "kill"
        if self.event not in EVENTS or self.action not in ACTIONS:
            raise ValueError(f"{ENV}: cannot read {text!r}; expected GID@step=K, GID@fwd=N or GID@setup=N "
                             f"(broker@step=K, broker@backprop=K, broker@snap=K, broker@replay=K), optionally :worker or :stop")
        self.text = text


def plan(gid):
    """The faults planned for group gid (none unless both variables are set)."""
    spec, log = settings.faults()
    if not spec or not log:
        return []
    return [f for f in map(Fault, filter(None, spec.split(","))) if f.gid == gid]


class Faults:
    """Checked by a group at its two known points; does nothing without a plan."""

    def __init__(self, gid):
        self.planned = plan(gid)
        self.forwards = self.setups = 0

    def after_step(self, step):
        if self.planned:
            self._maybe("step", step, f"after step {step}")

    def on_forward(self):
        if self.planned:
            self.forwards += 1
            self._maybe("fwd", self.forwards, f"at forward {self.forwards}")

    def on_setup(self):
        if self.planned:
            self.setups += 1
            self._maybe("setup", self.setups, f"at setup {self.setups}")

    def at(self, event, count, where):
        """A point of the broker's: step k logged, snapshot k sent, recovery k replaying."""
        if self.planned:
            self._maybe(event, count, where)

    def _maybe(self, event, count, where):
        for f in self.planned:
            if f.event == event and f.count == count and not _fired(f):
                _record(f, where)
                _fire(f)


def _fired(fault):
    try:
        with open(settings.faults()[1]) as log:
            return any(line.split(" ", 1)[0] == fault.text for line in log)
    except FileNotFoundError:
        return False


def _record(fault, where):
    with open(settings.faults()[1], "a") as log:
        log.write(f"{fault.text} {where} pid {os.getpid()}\n")
        log.flush()
        os.fsync(log.fileno())


def _worker_pid():
    """A group's parent is its worker's spawner, whose parent is the worker."""
    with open(f"/proc/{os.getppid()}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _fire(fault):
    if fault.action == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)  # returns once the test sends SIGCONT
        return
    if fault.action == "worker":
        os.kill(_worker_pid(), signal.SIGKILL)  # its spawner then ends every group, this one included
    os.kill(os.getpid(), signal.SIGKILL)


def fired(log_path):
    """The lines of a fault log: what fired, where, in which process."""
    try:
        with open(log_path) as log:
            return log.read().splitlines()
    except FileNotFoundError:
        return []
