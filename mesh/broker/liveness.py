"""When a silent group is dead, and when it is only busy.

A group's heartbeats come from a thread of its own (pulse.py), so a long
product does not silence them; silence past the expiry means the process is
stopped, starved of the CPU, or wedged. Its worker reports, every interval,
each group's /proc state and the CPU it used (procstat.Meter). A silent
group is taken for dead when its worker says it is stopped (state T: at
the base expiry, whatever the load), or
that it is not running and made no progress (no CPU used); one that is
running (state R: a loaded host's run queue) is given time, up to HARD
expiries. The expiry itself grows with the load its host reports (the run
queue per core, up to MAX_STRETCH times), from a base that is configurable (MESH_HEARTBEAT_EXPIRY,
`mesh broker --heartbeat-expiry`). Without a fresh report from its worker,
silence alone decides, as it did before these reports."""
from .. import heartbeat, settings

HARD = 6          # expiries a running but silent group is given before it is taken for wedged
MAX_STRETCH = 6   # the most the load stretches the expiry
FRESH = 3.0 * heartbeat.INTERVAL  # a worker's report of its groups older than this says nothing


def base_expiry(value=None):
    """Seconds of silence before a group is in doubt: value, else MESH_HEARTBEAT_EXPIRY, else heartbeat.EXPIRY."""
    value = value if value is not None else settings.heartbeat_expiry()
    seconds = float(value) if value not in (None, "") else heartbeat.EXPIRY
    if not seconds >= 2 * heartbeat.INTERVAL or seconds == float("inf"):
        raise ValueError(f"heartbeat expiry {seconds!r}: give at least {2 * heartbeat.INTERVAL:g} seconds")
    return seconds


def expiry(base, worker):
    """The base, stretched by the load its worker's host reports (runnable tasks per core above 1)."""
    load = worker.load if worker else None
    if not (isinstance(load, (int, float)) and load == load):
        return base
    return base * min(MAX_STRETCH, max(1.0, float(load)))


def verdict(g, worker, now, base):
    """None while group g may be alive; else why it is taken for dead. A stopped one
    (provably stuck) goes after the base expiry, whatever the load."""
    silent = now - g.heard
    if silent <= base:
        return None
    use = g.usage
    fresh = isinstance(use, list) and len(use) >= 3 and now - g.usage_at <= FRESH
    if fresh and use[2] in ("T", "t"):
        return f"stopped answering heartbeats ({silent:.0f}s): it is stopped (state {use[2]})"
    limit = expiry(base, worker)
    if silent <= limit:
        return None
    if not fresh:
        return f"stopped answering heartbeats ({silent:.0f}s)"
    cores, state = use[0], use[2]
    if state != "R" and not cores:
        return f"stopped answering heartbeats ({silent:.0f}s), neither running nor making progress (state {state})"
    if silent > HARD * limit:
        return f"stopped answering heartbeats ({silent:.0f}s) though running"
    return None
