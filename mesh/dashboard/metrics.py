"""/metrics: a snapshot in Prometheus' text format. Names follow its
conventions: the neuromesh_ prefix, base units (seconds, bytes), counters
ending in _total, and labels of a bounded set (process state, peer kind),
never one per neuron or group. Every family is there from the start, at zero."""
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

PROCESS_STATES = ("alive", "dead", "restarting", "starting")
COUNTERS = {  # totals kept by snapshot.Watch -> (name, help)
    "restarts": ("neuromesh_restarts", "Recoveries of a network: dead groups restarted or its state rebuilt"),
    "messages_sent": ("neuromesh_messages_sent", "Messages sent by group processes (heartbeats aside)"),
    "steps_applied": ("neuromesh_steps_applied", "Optimizer steps applied by every group of a network"),
    "training_samples": ("neuromesh_training_samples", "Training rows that went through a network"),
}


class SnapshotCollector:
    """Families from one snapshot (the state that snapshot.Watch.build returns)."""

    def __init__(self, state):
        self.state = state

    def collect(self):
        s = self.state
        processes = GaugeMetricFamily("neuromesh_processes", "Group processes by state", labels=["state"])
        for name in PROCESS_STATES:
            processes.add_metric([name], s["processes"].get(name, 0))
        yield processes
        yield GaugeMetricFamily("neuromesh_workers", "Workers joined to the broker", value=len(s["workers"]))
        yield GaugeMetricFamily("neuromesh_networks", "Networks on the broker", value=len(s["networks"]))
        for key, (name, doc) in COUNTERS.items():
            yield CounterMetricFamily(name, doc, value=s["totals"].get(key, 0))
        runs = [n["run"] for n in s["networks"] if n["run"]]
        latest = max(runs, key=lambda r: r["started"], default=None)
        yield GaugeMetricFamily("neuromesh_training_loss", "Mean loss per row of the last step of the latest "
                                "training run", value=(latest or {}).get("loss") or 0.0)
        yield GaugeMetricFamily("neuromesh_training_samples_per_second", "Training rows per second, all networks",
                                value=sum(r["samples_per_second"] or 0.0 for r in runs))
        age = GaugeMetricFamily("neuromesh_heartbeat_age_seconds", "Time since the quietest live peer's last "
                                "heartbeat", labels=["peer"])
        for peer in ("group", "worker"):
            age.add_metric([peer], s["heartbeat_age"].get(peer) or 0.0)
        yield age
        yield GaugeMetricFamily("neuromesh_group_resident_memory_bytes", "Resident memory of all group processes",
                                value=sum(p["rss"] or 0 for n in s["networks"] for p in n["processes"]))


def render(state):
    """The text of /metrics for one snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(state))
    return generate_latest(registry)
