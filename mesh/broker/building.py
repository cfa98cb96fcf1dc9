"""Building a network: place its groups (placement.py, within the workers'
budgets), spawn their processes, wire them (a plan made at once, its
messages sent a slice of each round of the loop), start a lost one again,
and stop them all. Every function takes the broker."""
import logging
import time

from .. import memory, wire
from . import budgets
from .inbox import close_push
from .jobs import Create
from .losses import end_work
from .network import Network, window_for
from .placement import plan, wiring
from .records import GroupRecord
from .registry import send_worker
from .snapshots import restore_plan
from .states import Event

log = logging.getLogger("mesh.broker")
WORK_SLICE = 0.02  # seconds of pending work (a wiring) each round of the loop


def build(b, client, req, spec, timeout, layers=None, optimizer=None, encoder=None, pins=None,
          plan_for=memory.PLAN_OPTIMIZER):
    """Place a network's groups on the workers (within their memory budgets, or
    refused with the numbers before any process starts), spawn them, and start
    the Create job. plan_for: the optimizer its memory is planned for."""
    inputs = len(encoder.keys) if encoder is not None else 0
    where = plan(spec, inputs, window_for(spec.sizes, spec.dtype), plan_for,
                 budgets.hosts(b.workers, b.nets.values()), pins or {})
    b.made["net"] += 1
    net = Network(f"n{b.made['net']}", spec, encoder, plan_for=plan_for)
    for layer, lo, hi, wid in where:
        index = len(net.layers[layer])
        gid = f"{net.id}.{layer + 1}.{index}"
        net.layers[layer].append(gid)
        w = b.workers[wid]
        net.groups[gid] = GroupRecord(gid=gid, layer=layer, index=index, lo=lo, hi=hi, worker=wid,
                                      worker_name=w.name, host=w.host, key=w.key)
    budgets.check(b.workers, b.nets.values(), net, "its snapshots", kinds=("disk",))  # before it starts
    for g in net.groups.values():
        b.workers[g.worker].groups.add(g.gid)
    b.nets[net.id] = net
    budgets.replan(net)
    return Create(b.ports, net, client, req, timeout, layers, optimizer).begin()


def wire_up(b, net, layers=None, optimizer=None, restore=False):
    """Every group has said hello: send each its neighbours and its weights (a
    loaded network's), or how to draw them (a new one's), or, when restoring,
    where its state is: its own snapshot, or its keeper's replica. The plan is made a
    group at a time, and its messages sent, a slice of each round of the loop (work),
    so that wiring hundreds of groups never holds the loop (the groups answer READY)."""
    net.all_steps_done()
    records = [[net.groups[g] for g in gids] for gids in net.layers]
    restores, holders = restore_plan(net, [g for layer in records for g in layer]) if restore else ({}, {})
    # a new process's keeper is the group that holds its replica
    plans = wiring(records, holders, net.spec.inputs, net.layer1_width)
    b.pending.append(_setups(b, net, net.gen, plans, restores, layers, optimizer, restore))


def _setups(b, net, gen, plans, restores, layers, optimizer, restore):
    """wire_up's messages, one group's at a time, in network order; they stop if the network
    is dropped or rebuilt meanwhile (a recovery wires it anew)."""
    spec, to_group = net.spec, b.flow.to_group
    drawn = spec.to_dict()  # what a new network's groups draw their rows from
    while b.nets.get(net.id) is net and net.gen == gen:
        g, setup = next(plans, (None, None))
        if g is None:
            return
        gid, layer = g.gid, g.layer
        header = {"k": wire.SETUP, "function": spec.hidden_function(layer), "gen": net.gen, "applied": net.step,
                  **setup}
        if restore:
            to_group(net, gid, dict(header, restore=restores[gid]))
            if restores[gid].get("from") == "broker":
                replica_header, arrays = net.broker_replica[restores[gid]["snap"]]
                to_group(net, gid, dict(replica_header, k=wire.REPLICA), arrays)
        elif layers is None:  # a new network: each group draws its own rows from the seed
            to_group(net, gid, dict(header, init={"spec": drawn, "fan_in": spec.fan_in(layer, net.layer1_width)}))
        else:  # a loaded one: the file's weights, a group's rows at a time
            W, bias = layers[layer]
            meta, slots = optimizer[layer] if optimizer else ({}, [])
            arrays = [W[g.lo:g.hi], bias[g.lo:g.hi]]
            to_group(net, gid, header, arrays)
            if meta.get("has_slots"):
                to_group(net, gid, {"k": wire.SET, "optimizer": meta}, arrays + [s[g.lo:g.hi] for s in slots])
        yield


def work(b):
    """Pending work (the messages of a wiring), for a slice of this round at most."""
    deadline = time.monotonic() + WORK_SLICE
    while b.pending and time.monotonic() < deadline:
        try:
            next(b.pending[0])
        except StopIteration:
            b.pending.popleft()
        except Exception:
            log.exception("a wiring failed")
            b.pending.popleft()


def respawn(b, net, gid):
    """Start group gid again: on its worker if that lives, else where its planned memory
    fits with the most room left, or (no budgets) on the least loaded worker."""
    g = net.groups[gid]
    if g.worker not in b.workers:
        wid = budgets.roomiest(b.workers, b.nets.values(), g.planned) or min(
            b.workers, key=lambda w: len(b.workers[w].groups) / b.workers[w].slots)
        w = b.workers[wid]
        g.worker, g.worker_name, g.host, g.key = wid, w.name, w.host, w.key
    b.workers[g.worker].groups.add(gid)
    g.pid, g.endpoints, g.snaps, g.holds = None, {}, set(), set()  # a new process holds no snapshot
    close_push(net, gid)
    config = {"net": net.id, "gid": gid, "layer": g.layer, "lo": g.lo, "hi": g.hi, "dtype": net.spec.dtype,
              "token": net.token}
    send_worker(b, g.worker, {"k": wire.SPAWN, "config": config})


def stop_net(b, net):
    b.nets.pop(net.id, None)  # first: the jobs failed below must not try to recover it
    b.pending.append(_stop_groups(b, net, [gid for gid in net.groups if gid in net.push]))
    end_work(b, net, f"network {net.id} was dropped")
    if net.life.can(Event.DROPPED):  # a create failed by end_work above has dropped it already (end_net)
        net.life.fire(Event.DROPPED)
    for g in net.groups.values():
        if g.worker in b.workers:
            b.workers[g.worker].groups.discard(g.gid)


def _stop_groups(b, net, gids):
    """STOP to each group, and the broker's socket to it closed, one a step: hundreds of them
    never hold the loop (work). A second drop's finds the sockets gone and sends nothing."""
    for gid in gids:
        if gid in net.push:
            b.flow.to_group(net, gid, {"k": wire.STOP})
            net.push.pop(gid).close()
        yield


def end_net(b, net):
    """Drop a network and have its workers end every process of it, started or starting
    (those that never said hello have no socket a STOP could go to)."""
    stop_net(b, net)
    for gid, g in net.groups.items():
        if g.worker in b.workers:
            send_worker(b, g.worker, {"k": wire.KILL, "gid": gid, "sig": 9})
