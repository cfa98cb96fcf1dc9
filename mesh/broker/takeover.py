"""A standby becomes the active broker: its replica (replication.Shadow) becomes
the broker's state, and every network is restored the way a recovery
restores one (recovery.py), with one difference: its live groups are not
respawned but told where the new broker is (REBROKER), and say hello.

Each network then restores its last whole snapshot and replays the shipped
log, so every group holds exactly the steps the standby knows of: a step the
old broker sent but had not shipped is undone by the restore and, in an
exact training run, sent again at the same place of the same order of rows
(training.ExactRun.resume). Workers and clients come to this broker by
themselves; a worker that never does is lost like any silent worker."""
import time

from .network import Network
from .records import WorkerRecord
from .recovery import Recover
from .states import State
from .resident import ResidentRun  # noqa: F401  the resident run, chosen by Train(...)
from .training import Train

GEN_EPOCH = 1 << 32  # generations a broker of epoch e hands out start at e * GEN_EPOCH: never an old one's


def take_over(b, shadow, epoch, asked):
    """Make broker b the active one from shadow (whose answers it keeps giving); its networks
    start recovering. asked: (client, request id) -> kind of what is being worked on."""
    rec = shadow.broker or {"made": b.made, "workers": {}}
    b.made = dict(rec["made"])
    # workers come back by themselves; what is sent to one before it does waits for it ("waiting")
    b.workers = {bytes.fromhex(wid): WorkerRecord.from_dict(w) for wid, w in rec["workers"].items()}
    for w in b.workers.values():
        w.waiting = []
    for nid, entry in shadow.nets.items():
        net = network_from(entry, epoch)
        if net.state is State.STARTING:
            continue  # its create was never answered; its groups are ended when their workers come
        b.nets[nid] = net
        for gid, g in net.groups.items():
            if g.worker in b.workers:
                b.workers[g.worker].groups.add(gid)
        if net.state in (State.FAILED, State.DROPPED):
            continue
        interrupted = []
        trainer = entry["meta"]["trainer"]
        if trainer is not None:
            interrupted = resume_training(b, net, trainer, entry["train"], shadow.answers, asked)
        Recover(b.ports, net, f"the broker failed over (epoch {epoch})", interrupted).begin()


def network_from(entry, epoch):
    net = Network.from_dict(entry["meta"])
    net.gen = max(net.gen, epoch * GEN_EPOCH)  # data still in flight from the old broker is of an older one
    now = time.monotonic()
    for g in net.groups.values():
        g.heard, g.attached = now, False  # heard of now; it says hello to this broker yet
    net.log = list(entry["log"])
    return net


def resume_training(b, net, trainer, train, answers, asked):
    """The exact training run, carried on from its mark; an async run cannot be, and is
    answered so (a client that asks again hears why)."""
    client = bytes.fromhex(trainer["client"]) if trainer["client"] else None
    key = (client, trainer["req"])
    if trainer["mark"] is None or train is None or train[0]["serial"] != trainer["serial"]:
        answers.add(key, {"ok": False, "error": f"the broker failed over during an async training run of network "
                          f"{net.id}; the {trainer['steps']} steps the standby knew of are applied, the run cannot "
                          f"resume exactly: run it again"})
        net.progress = dict(net.progress, cancelling=False)
        if net.state is State.TRAINING:
            net.life.state = State.READY
        return []
    body, X, Y = train
    job = Train.resumed(b.ports, net, client, trainer["req"], trainer["timeout"], X, Y, body["opts"], trainer["mark"])
    net.trainer = job
    b.ports.jobs.add(job)  # its deadline is watched, as a begun job's (it waits while the network recovers)
    asked[key] = "train"
    return [job]
