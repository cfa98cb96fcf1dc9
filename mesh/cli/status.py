"""`mesh status`: the mesh and its networks, as text or JSON."""
import json

import click

from ..sizes import format_size
from .calls import broker_option, call, connect, timeout_option


@click.command()
@broker_option
@timeout_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (everything, every process included).")
@click.option("--groups", is_flag=True, help="List every group process too.")
def status(broker, timeout, as_json, groups):
    """Workers, hosts and slots; each network's state, training progress, restarts."""
    with connect(broker, timeout) as c:
        s = call(c.status)
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
    for line in status_lines(s, groups):
        click.echo(line)


def status_lines(s, groups=False):
    """A summary like `ray status`: the mesh, then one paragraph per network."""
    b, workers = s["broker"], s["workers"]
    hosts = sorted({w["host"] for w in workers})
    used, slots = sum(w["groups"] for w in workers), sum(w["slots"] for w in workers)
    yield f"broker {b['address']} (pid {b['pid']})"
    pair = b.get("pair")
    if pair:
        peer = f"{pair['peer_role'] or 'not heard'}"
        lag = "" if pair["lag"] is None else f", standby lag {pair['lag']} records"
        yield (f"  {pair['role']} broker of a pair (epoch {pair['epoch']}, {pair['failovers']} failovers here); "
               f"peer {pair['peer']}: {peer}{lag}")
    yield f"{len(workers)} workers on {len(hosts)} hosts, {used} group processes on {slots} slots"
    for w in workers:
        yield (f"  worker {w['name']:<4} {w['host']:<15} pid {w['pid']:<7} slots {w['slots']:<3} groups {w['groups']:<4}"
               f" {_memory_line(w.get('memory'))}{_memory_line(w.get('disk'), '; disk')}")
    if not s["networks"]:
        yield "no networks"
    for n in s["networks"]:
        yield (f"network {n['net']}: {n['state']}; sizes {n['sizes']}, {n['inputs']} inputs, {n['groups']} groups "
               f"({n['alive']} alive), {n['links']['total']} links ({n['links']['cross_host']} cross hosts)")
        if n["state"] == "failed":
            yield f"  failed: {n['failure']}"
        t = n.get("training")
        if t:
            loss = "-" if t.get("loss") is None else f"{t['loss']:.6g}"
            yield (f"  training: epoch {t['epoch']}/{t['epochs']}, step {t['step']}, loss {loss}, "
                   f"{t['rate']:,.0f} rows/s")
        yield f"  steps applied {n['steps']}, restarts {n['restarts']}" + (
            f", last failure: {n['last_failure']}" if n["last_failure"] else "")
        if groups:
            for p in n["processes"]:
                lo, hi = p["neurons"]
                state = "alive" if p["alive"] else "dead"
                yield (f"  {p['gid']:<12} layer {p['layer']} neurons {lo}..{hi - 1} pid {p['pid']} "
                       f"host {p['host']} worker {p['worker']} {state}")


def _memory_line(m, what="memory"):
    """memory planned 1.2 GiB of 1.5 GiB, measured 1.1 GiB (what="; disk": the disk's alike)"""
    if not m:
        return ""
    budget = f" of {format_size(m['budget'])}" if m.get("budget") else " (no budget)"
    measured = "-" if m.get("measured") is None else format_size(m["measured"])
    return f"{what} planned {format_size(m['planned'])}{budget}, measured {measured}"
