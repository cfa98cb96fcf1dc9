"""The broker's state as plain data (what /api/state returns and the page
draws), built in the broker loop a few times a second: the broker's own
status view (broker/statusview.py: the names `mesh status --json` uses), and
what only a watcher measures, added beside them: each process's state, CPU,
memory, message rate and heartbeat age, each worker's, and each network's
training run ("run"), from the events it notes for watchers (Network.note).
Everything read from the broker is read here and nowhere else in the
dashboard. Between snapshots the Watch keeps what one snapshot alone cannot
tell: message rates, counters that only grow, and the loss curves."""
import math
import time
from collections import Counter, deque

from ..broker import statusview
from .curve import Curve

RATE_WINDOW = 3.0  # seconds of training progress behind samples/s
MARKS = 200        # restarts kept per training run


def num(x, digits=6):
    """A finite float for JSON (NaN and infinities are not JSON), or None."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return round(x, digits) if math.isfinite(x) else None


def count(x):
    return x if isinstance(x, int) and x >= 0 else 0


class Run:
    """One training run as the page shows it; kept after it ends, until the next starts."""

    def __init__(self, event):
        self.info = {k: event.get(k) for k in ("epochs", "rows", "batch_size", "mode")}
        self.started = event["time"]
        self.curve = Curve()
        self.marks = deque(maxlen=MARKS)  # [step, why, time] of each restart during the run
        self.recent = deque()             # (time, rows) of the steps of the last RATE_WINDOW s
        self.last = {"epoch": 0, "step": 0, "loss": None, "samples_per_second": 0.0, "rows_done": 0}
        self.epochs = []                  # [loss x rows, rows] per epoch: its mean loss, as train() returns it
        self.state = "training"

    def step(self, e):
        """One "loss" event: a step of `rows` rows and its mean loss per row."""
        rows, loss, epoch = count(e.get("rows")), e["loss"], max(1, count(e.get("epoch")))
        self.curve.add(e["step"], loss)
        self.last.update(step=e["step"], epoch=epoch, loss=num(loss), rows_done=self.last["rows_done"] + rows)
        self.recent.append((e["time"], rows))
        while len(self.epochs) < epoch:
            self.epochs.append([0.0, 0])
        self.epochs[epoch - 1][0] += loss * rows
        self.epochs[epoch - 1][1] += rows

    def samples_per_second(self, now):
        while self.recent and now - self.recent[0][0] > RATE_WINDOW:
            self.recent.popleft()
        if self.state != "training" or not self.recent:
            return 0.0
        return num(sum(r for _, r in self.recent) / min(RATE_WINDOW, max(now - self.started, 1e-3)), 1)


class Watch:
    def __init__(self):
        self.started = time.time()
        self.runs = {}       # net id -> Run
        self.beats = {}      # (gid, pid) -> (msgs, heard) at the last heartbeat seen
        self.rates = {}      # (gid, pid) -> messages per second between the last two heartbeats
        self.seen = {}       # counter name -> {key: last value}: what the totals already hold
        self.totals = Counter(restarts=0, messages_sent=0, steps_applied=0, training_samples=0)
        self.build_seconds = 0.0

    # -- events --------------------------------------------------------
    def take_deaths(self, broker):
        """Read every network's new events; returns {gid: old pid} of the groups that died."""
        dead = {}
        for net in broker.nets.values():
            while net.events:
                e = net.events.popleft()
                run = self.runs.get(net.id)
                if e["kind"] == "train":
                    self.runs[net.id] = Run(e)
                elif e["kind"] == "loss" and run is not None:
                    run.step(e)
                    self.totals["training_samples"] += count(e.get("rows"))
                elif e["kind"] == "lost":
                    dead.update(e.get("pids") or {})
                    if run is not None and run.state == "training":
                        run.marks.append([e.get("step"), str(e.get("why")), e["time"]])
        return dead

    # -- the snapshot ----------------------------------------------------
    def build(self, broker, dead=None):
        """The whole state; groups in `dead` ({gid: pid}) shown dead with that pid, whatever they are now."""
        t0 = time.perf_counter()
        now = time.monotonic()
        workers = [self.worker(broker, wid, now) for wid in broker.workers]
        nets = [self.network(net, now, dead or {}) for net in list(broker.nets.values())]
        for nid in set(self.runs) - set(broker.nets):
            del self.runs[nid]  # dropped networks take their runs along
        self.forget(broker)
        states = Counter(p["state"] for n in nets for p in n["processes"])
        state = {
            "time": time.time(),
            "broker": dict(statusview.broker_view(broker), uptime=num(time.time() - self.started, 1),
                           snapshot_ms=num(self.build_seconds * 1000, 3)),
            "workers": workers,
            "networks": nets,
            "processes": {s: states.get(s, 0) for s in ("alive", "dead", "restarting", "starting")},
            "totals": dict(self.totals),
            "heartbeat_age": {"group": max([p["heartbeat_age"] or 0 for n in nets for p in n["processes"]
                                            if p["state"] == "alive"], default=0.0),
                              "worker": max([w["heartbeat_age"] for w in workers], default=0.0)},
        }
        self.build_seconds = time.perf_counter() - t0
        return state

    def worker(self, broker, wid, now):
        w = broker.workers[wid]
        cores, rss = usage(w.usage)
        return dict(statusview.worker_view(broker, wid), cpu=cores, rss=rss, heartbeat_age=num(now - w.peer.heard, 2))

    def network(self, net, now, dead):
        applied = [count(g.applied) for g in net.groups.values() if g.applied is not None]
        if applied and len(applied) == len(net.groups):  # a step is applied once every group has applied it
            self.grow("steps_applied", net.id, min(applied))
        self.grow("restarts", net.id, net.restarts)
        view = statusview.network_view(net)
        view["processes"] = [self.process(net, g, p, now, dead) for g, p in zip(net.groups.values(), view["processes"])]
        view["run"] = self.training(net, self.runs.get(net.id))
        return view

    def process(self, net, g, view, now, dead):
        """A group's status view, with what a watcher measures of its process."""
        state, pid = group_state(net, g), g.pid
        if g.gid in dead:
            state, pid = "dead", dead[g.gid]
        self.count_messages(g)
        cores, rss = usage(g.usage)
        return dict(view, pid=pid, state=state, msg_rate=num(self.rates.get((g.gid, g.pid), 0.0), 1), cpu=cores,
                    rss=rss, applied=g.applied if isinstance(g.applied, int) else None,
                    heartbeat_age=num(now - g.heard, 2) if g.alive and g.heard else None)

    def count_messages(self, g):
        """A message rate between two heartbeats of one process, and the total over all of them."""
        key, msgs, heard = (g.gid, g.pid), count(g.msgs), g.heard or 0.0
        before = self.beats.get(key)
        if before is None or heard > before[1]:
            if before is not None:
                self.rates[key] = max(0, msgs - before[0]) / (heard - before[1])
            self.beats[key] = (msgs, heard)
            self.grow("messages_sent", key, msgs)

    def grow(self, name, key, value):
        """Add to a total what one source gained above its highest value seen (a new process, a new
        key, starts at 0; rows a recovery redoes are not counted twice)."""
        seen = self.seen.setdefault(name, {})
        if value > seen.get(key, 0):
            self.totals[name] += value - seen.get(key, 0)
            seen[key] = value

    def forget(self, broker):
        """Sources that are gone: processes replaced, networks dropped, training runs ended."""
        procs = {(g.gid, g.pid) for net in broker.nets.values() for g in net.groups.values()}
        self.beats = {k: v for k, v in self.beats.items() if k in procs}
        self.rates = {k: v for k, v in self.rates.items() if k in procs}
        for name, keep in (("messages_sent", procs), ("steps_applied", broker.nets),
                           ("restarts", broker.nets)):
            self.seen[name] = {k: v for k, v in self.seen.get(name, {}).items() if k in keep}

    def training(self, net, run):
        if run is None:
            return None
        if net.trainer is None and run.state == "training":  # ended; its last steps were in the events
            run.state = "failed" if net.failed else "done"
        per_epoch = -(-run.info["rows"] // run.info["batch_size"]) if run.info.get("mode") == "exact" else None
        return {**run.info, **run.last, "samples_per_second": run.samples_per_second(time.time()),
                "state": run.state, "started": run.started, "steps_per_epoch": per_epoch,
                "curve": run.curve.view(),  # finite floats only (Curve.add)
                "epoch_losses": [num(total / rows) for total, rows in run.epochs if rows],
                "restarts": list(run.marks)}


def usage(u):
    """[cores, bytes, state] as a worker reported it, or (None, None)."""
    if isinstance(u, list) and len(u) >= 2:
        return num(u[0], 3), count(u[1])
    return None, None


def group_state(net, g):
    if g.alive:
        return "alive"
    return {"recovering": "restarting", "starting": "starting"}.get(net.state.value, "dead")
