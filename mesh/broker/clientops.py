"""What clients may ask, one function each, in one table (HANDLERS).

A handler checks the request, then answers at once or begins a job; a
refusal is a ValueError (or RuntimeError) whose message the client sees.
Every handler gets the broker (loop.py), the client's identity, the header
and the arrays."""
import numpy as np

from .. import memory, wire
from ..checkpoint import pack_state
from ..encoder import Encoder
from ..optim import OPTIMIZERS, SLOTS
from ..spec import Spec
from . import budgets, leases, statusview
from .building import build, stop_net
from .encoding import encode
from .jobs import Backprop, Collect, Predict, SetWeights
from .states import State
from .cancel import Cancel
from .resident import ResidentRun  # noqa: F401  the resident run, chosen by Train(...)
from .training import Train

DEFAULT_TIMEOUT = 60.0
MAX_RUNS = 64  # online runs remembered per network, for cancel


def network(b, h, ready=True):
    """The network a request names, refused with the reason when it cannot answer."""
    net = b.nets.get(h.get("net"))
    if net is None:
        raise ValueError(f"unknown network {h.get('net')!r}; known: {', '.join(b.nets) or 'none'}")
    if net.failed:
        raise RuntimeError(f"network {net.id} failed: {net.life.failure}")
    if ready and net.state is State.STARTING:
        raise RuntimeError(f"network {net.id} is still starting")
    return net


def timeout_of(h):
    t = float(h.get("timeout") or DEFAULT_TIMEOUT)
    if not t > 0:
        raise ValueError(f"timeout must be positive, got {t}")
    return t


def not_training(net, what):
    if net.trainer is not None:
        raise RuntimeError(f"network {net.id} is training; {what} after it ends (or cancel it)")


def create(b, client, h, arrays):
    spec = Spec(**h["spec"])
    pins = h.get("placement") or {}
    if not isinstance(pins, dict) or not all(str(k).isdigit() and 1 <= int(k) <= len(spec.sizes) for k in pins):
        raise ValueError(f"placement must map layer numbers 1..{len(spec.sizes)} to hosts, got {pins!r}")
    plan_for = h.get("optimizer") or memory.PLAN_OPTIMIZER
    if plan_for not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {plan_for!r} to plan memory for; choose one of {', '.join(OPTIMIZERS)}")
    build(b, client, h.get("id"), spec, timeout_of(h), pins={str(k): str(v) for k, v in pins.items()},
          plan_for=plan_for)


def predict(b, client, h, arrays):
    net = network(b, h)
    chunk = int(h.get("chunk") or 256)
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1 row, got {chunk}")
    keep = bool(h.get("keep", True))
    # predict adds no inputs (only the first rows a network sees size layer 1): values never trained
    # on are absent; a backprop that trains on a kept pass grows layer 1 for them (Backprop.grow)
    X, rows = encode(b, net, h, arrays, grow=net.inputs == 0, strict=h.get("strict") is not False, keep_rows=True)
    if len(X) == 0:
        raise ValueError("no rows to predict")
    Predict(b.ports, net, client, h.get("id"), timeout_of(h), X, keep, chunk, rows if keep else None).begin()


def backprop(b, client, h, arrays):
    net = network(b, h)
    not_training(net, "backprop")
    run = h.get("run")
    if run is not None:  # one backprop of an online run (Network.online)
        if run in net.cancelled_runs:
            b.reply(client, h.get("id"), ok=False, error=f"the online run on network {net.id} was cancelled",
                    cancelled=True)
            return
        if run not in net.online_runs and len(net.online_runs) >= MAX_RUNS:
            net.online_runs.pop(next(iter(net.online_runs)))
        net.online_runs[run] = net.online_runs.get(run, 0) + 1
    lr = float(h["learning_rate"])
    if not np.isfinite(lr) or lr < 0:
        raise ValueError(f"invalid learning rate: {h['learning_rate']}")
    if len(arrays) != 1:
        raise ValueError("backprop needs one array of targets")
    Backprop(b.ports, net, client, h.get("id"), timeout_of(h), arrays[0], lr).begin()


def train(b, client, h, arrays):
    net = network(b, h)
    if net.trainer is not None:
        raise RuntimeError(f"network {net.id} is already training (cancel it with `net.cancel()` or `mesh cancel`)")
    opt = (h.get("options") or {}).get("optimizer", "sgd")
    name = opt.get("name", "sgd") if isinstance(opt, dict) else opt
    if name in SLOTS and SLOTS[name] > SLOTS[net.plan_for]:  # more state than planned: within the budgets, or refused
        if budgets.budgeted(b.workers, net):
            budgets.check(b.workers, b.nets.values(), net, f"training with {name} (planned for {net.plan_for})",
                          optimizer=name)
        net.plan_for = name
        budgets.replan(net)
    kept, inputs = net.encoder.to_dict(), net.inputs
    X = encode(b, net, h, arrays[:-1])
    try:
        Train(b.ports, net, client, h.get("id"), timeout_of(h), X, arrays[-1], h.get("options", {})).begin()
    except (ValueError, TypeError, KeyError, RuntimeError):
        if net.inputs == inputs:  # nothing grew: a refused run leaves no scaling or target behind (leases hold it)
            net.encoder = Encoder.from_dict(kept)
        raise


def cancel(b, client, h, arrays):
    net = network(b, h)
    while len(net.cancelled_runs) > 4 * MAX_RUNS:  # the oldest are long over
        net.cancelled_runs.pop(next(iter(net.cancelled_runs)))
    Cancel(b.ports, net, client, h.get("id"), timeout_of(h)).begin()


def layer_of(net, h):
    """The layer a request names (0-based), or None for all of them."""
    layer = h.get("layer")
    if layer is None:
        return None
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < len(net.layers):
        raise ValueError(f"layer must be 0..{len(net.layers) - 1}, got {layer!r}")
    return layer


def weights(b, client, h, arrays):
    """W and b of one layer ("layer": i), or of all: clients ask layer by layer, so
    that no one process, the broker included, holds a big network whole."""
    net = network(b, h)

    def then(job, layers, optim):
        job.reply([a for W, b_ in layers for a in (W, b_)], layers=len(net.layers), steps=job.steps)
    Collect(b.ports, net, client, h.get("id"), timeout_of(h), then, layer_of(net, h), slots=False).begin()


def set_weights(b, client, h, arrays):
    net = network(b, h)
    not_training(net, "set weights")
    n = len(net.spec.sizes)
    if len(arrays) != 2 * n:
        raise ValueError(f"need W and b for each of {n} layers, got {len(arrays)} arrays")
    layers = fitting_layers(net.spec, net.inputs, arrays, finite=True)
    SetWeights(b.ports, net, client, h.get("id"), timeout_of(h), layers).begin()


def save(b, client, h, arrays):
    """What a checkpoint holds, of one layer ("layer": i) or of all: W, b, optimizer slots."""
    net = network(b, h)

    def then(job, layers, optim):
        meta, arrays = pack_state(net, layers, optim)
        job.reply(arrays, layers=len(net.layers), **meta)
    Collect(b.ports, net, client, h.get("id"), timeout_of(h), then, layer_of(net, h)).begin()


def load(b, client, h, arrays):
    spec = Spec(**h["spec"])
    n = len(spec.sizes)
    if len(arrays) < 2 * n:
        raise ValueError(f"a saved network of {n} layers needs {2 * n} arrays, got {len(arrays)}")
    encoder = Encoder.from_dict(h["encoder"])
    layers = fitting_layers(spec, len(encoder.keys), arrays)
    optimizer, at = [], 2 * n
    for meta in h.get("optimizer", []):
        k = int(meta["slots"])
        optimizer.append((meta, arrays[at:at + k]))
        at += k
    build(b, client, h.get("id"), spec, timeout_of(h), layers, optimizer or None, encoder)


def processes(b, client, h, arrays):
    b.reply(client, h.get("id"), ok=True, processes=statusview.processes(network(b, h, ready=False)))


def status(b, client, h, arrays):
    b.reply(client, h.get("id"), ok=True, **statusview.status_of(b))


def route(b, client, h, arrays):
    """A lease for predicts that skip the broker, or why not and when to ask again."""
    try:
        fields = leases.lease(b, network(b, h))
    except leases.NoLease as e:
        b.reply(client, h.get("id"), ok=True, lease=False, why=str(e), retry=e.retry)
        return
    b.reply(client, h.get("id"), ok=True, lease=True, **fields)


def ping(b, client, h, arrays):
    b.reply(client, h.get("id"), ok=True)


def drop(b, client, h, arrays):
    net = b.nets.get(h.get("net"))
    if net is None:
        raise ValueError(f"unknown network {h.get('net')!r}")
    stop_net(b, net)
    b.reply(client, h.get("id"), ok=True)


def fitting_layers(spec, inputs, arrays, finite=False):
    """[(W, b)] per layer from the first arrays, each checked against the spec (and, if asked, finite)."""
    widths = spec.fan_ins(inputs)
    layers = [(arrays[2 * i], arrays[2 * i + 1]) for i in range(len(spec.sizes))]
    for i, ((W, b), size, fan_in) in enumerate(zip(layers, spec.sizes, widths)):
        bad_values = finite and not (np.isfinite(W).all() and np.isfinite(b).all())
        if W.shape != (size, fan_in) or b.shape != (size,) or bad_values:
            raise ValueError(f"layer {i + 1}: weights {list(W.shape)} and bias {list(b.shape)} do not fit a layer "
                             f"of {size} neurons with {fan_in} inputs" + (" (or are not finite)" if finite else ""))
    return layers


HANDLERS = {wire.CREATE: create, wire.PREDICT: predict, wire.BACKPROP: backprop, wire.TRAIN: train,
            wire.CANCEL: cancel, wire.WEIGHTS: weights, wire.SET_WEIGHTS: set_weights, wire.SAVE: save,
            wire.LOAD: load, wire.PROCESSES: processes, wire.STATUS: status, wire.DROP: drop, wire.PING: ping,
            wire.ROUTE: route}
# requests that need the whole network: while it is rebuilt or read, they wait
WAITS_FOR_RECOVERY = {wire.PREDICT, wire.BACKPROP, wire.TRAIN, wire.WEIGHTS, wire.SAVE, wire.SET_WEIGHTS}
