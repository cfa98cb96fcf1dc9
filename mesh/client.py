"""The client API: talks only to the broker.

    client = mesh.Client("tcp://127.0.0.1:5555")
    net = client.create([5, 5, 1], group_size=1, seed=7)
    net.predict([0.0, 1.0]); net.backprop([1.0], learning_rate=0.5)

Every call has a timeout; a broker refusal is raised as RemoteError with the
broker's message, silence as MeshTimeout naming what did not answer."""
import itertools
import os
import time
from collections import deque

import numpy as np
import zmq

from . import direct, heartbeat, sockets, table, wire
from .brokers import Brokers
from .checkpoint import Writer, read, slot_index
from .progress import RunProgress
from .spec import Spec

DEFAULT_TIMEOUT = 60.0
GRACE = 5.0  # we wait a little longer than the broker, so its error, which names the culprit, arrives first


class RemoteError(RuntimeError):
    """The broker refused a request; the message says why."""


class MeshTimeout(TimeoutError):
    """Nothing answered in time."""


class BrokerExited(MeshTimeout):
    """The broker's process, started by this program (mesh.local), has ended: nothing will answer."""


class Cancelled(RemoteError):
    """A training or online run was cancelled (Network.cancel, from this client or
    another, or Ctrl-C). epochs and steps say how far it got; every step it took
    was applied everywhere."""

    def __init__(self, message, epochs=0, steps=0, history=()):
        super().__init__(message)
        self.epochs, self.steps, self.history = epochs, steps, list(history)


STEPS = {wire.BACKPROP, wire.TRAIN, wire.SET_WEIGHTS}  # requests that change a network's weights
CONNECT_GRACE = 5.0  # seconds: no connection by then means no broker listens there
PING_EVERY = heartbeat.INTERVAL  # a client of a pair asks whether its broker is there when it hears nothing
FAILOVER_AFTER = heartbeat.EXPIRY  # ...and moves to the other broker after this long without an answer


class Client:
    def __init__(self, address="tcp://127.0.0.1:5555", timeout=DEFAULT_TIMEOUT, keys=None, direct_predicts=True):
        """address: the broker's, or a pair's two separated by a comma (the client follows the
        active one). keys: a keys folder (see mesh.security); default MESH_KEYS, if set.
        direct_predicts: predict(remember=False) skips the broker when the broker leases
        the way (direct.py); False: every predict goes through the broker."""
        from .security import Keys
        self.brokers, self.timeout = Brokers(address), float(timeout)
        self.keys = Keys(keys, "client") if keys else Keys.from_env("client")
        self.ctx = zmq.Context()
        # the same identity at either broker of a pair: an answer given before a failover is found again
        self.identity = b"client-" + os.urandom(8).hex().encode()
        self.ids = itertools.count(1)
        self.sent = {}      # request id -> (op, seconds to wait) of requests not yet answered
        self.answers = {}   # request id -> frames of answers that came before they were waited for
        self.outbox = {}    # a pair's client: request id -> (header, arrays), to send again after a failover
        self.kept = deque(maxlen=64)  # ...and [id, network, header, arrays, used] of its last remembered
                                      # predicts (used: an answered backprop trained on it)
        self.resend_at = None  # when to ask a standby again (it is taking over)
        self.fled = -FAILOVER_AFTER  # when it last left a broker that went silent or dropped the connection
        self.unreachable = 0  # brokers in a row that accepted no connection
        self.watch = None  # () -> why the broker cannot answer, or None: set by whoever started it (localmesh)
        self._open()
        local = direct_predicts and self.keys is None and direct.usable(self.brokers.all)
        self.direct = direct.Direct(self.ctx, self._route, min(direct.PATIENCE, self.timeout)) if local else None

    @property
    def address(self):
        return self.brokers.current

    def _open(self):
        self.sock = sockets.make(self.ctx, zmq.DEALER, keys=self.keys, dial=self.keys and self.keys.broker_public)
        self.sock.setsockopt(zmq.ROUTING_ID, self.identity)
        # told when the connection is made: silence then means a slow broker, not a missing one
        self.monitor = self.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_CONNECTED |
                                                    zmq.EVENT_DISCONNECTED)
        self.monitor.setsockopt(zmq.LINGER, 0)
        self.connected = False
        self.spoken = False  # it has answered: keys, missing or wrong, are not why it is silent
        self.born = self.heard = self.pinged = time.monotonic()
        self.sock.connect(self.address)

    def close(self):
        self.sock.disable_monitor()
        self.ctx.destroy(linger=0)

    def forget(self, rid):
        for table_ in (self.sent, self.answers, self.outbox):
            table_.pop(rid, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __deepcopy__(self, memo):
        """A connection is shared, not copied: clone() of an estimator given this client uses it too."""
        return self

    def request(self, op, arrays=(), timeout=None, on_progress=None, **fields):
        """Send one request and wait for its reply: (header, arrays)."""
        return self.wait(self.send(op, arrays, timeout, **fields), on_progress)

    def send(self, op, arrays=(), timeout=None, patience=None, **fields):
        """Send a request without waiting; its id, for wait(). Replies may come in any
        order (a backprop waits for its predict); wait() sorts them by id.
        timeout: the broker's deadline for the work; patience: how long wait() waits
        for the reply (default: the timeout and a little more, so the broker's error comes first)."""
        timeout = float(timeout or self.timeout)
        wait = float(patience) if patience else timeout + min(GRACE, timeout)
        rid = next(self.ids)
        self.sock.setsockopt(zmq.SNDTIMEO, int(wait * 1000))
        try:
            sockets.send(self.sock, {"k": op, "id": rid, "timeout": timeout, **fields}, arrays)
        except zmq.Again:
            raise MeshTimeout(f"could not send {op!r} to the broker at {self.address} within "
                              f"{wait:g}s: no connection{self._hint()}") from None
        self.sent[rid] = (op, wait)
        if self.direct is not None and op in STEPS:  # its own steps: later predicts must see them (direct.py)
            self.direct.forget(fields.get("net"))
        if self.brokers.pair:
            self.outbox[rid] = ({"k": op, "id": rid, "timeout": timeout, **fields}, arrays)
            if op == wire.PREDICT and fields.get("keep"):
                self.kept.append([rid, fields.get("net"), *self.outbox[rid], False])
        return rid

    def wait(self, rid, on_progress=None):
        """The reply to request rid: (header, arrays); RemoteError if the broker refused it.
        After a KeyboardInterrupt the request is still pending: it may be waited for again."""
        op, wait = self.sent[rid]
        try:
            deadline = time.monotonic() + wait
            while rid not in self.answers:
                if self.resend_at is not None and time.monotonic() >= self.resend_at:
                    self.resend_at = None
                    self._resend()
                if not self.sock.poll(self._next_poll(deadline) * 1000):
                    if self.brokers.pair and self._watch_pair(op):
                        deadline = time.monotonic() + wait  # the work starts again at the other broker
                    elif not self.brokers.pair:
                        self._check_connected(op)
                    gone = self.watch and self.watch()
                    if gone:
                        raise BrokerExited(f"{gone}: {op!r} will not be answered")
                    if time.monotonic() >= deadline:
                        raise MeshTimeout(f"broker at {self.address} did not answer {op!r} within {wait:g}s"
                                          f"{self._hint()}")
                    continue
                _, h, out = sockets.recv(self.sock, max_header=1 << 24)
                self.connected = self.spoken = True
                self.heard = time.monotonic()
                if h.get("standby") and h.get("id") in self.sent and self.brokers.pair:
                    # we asked the standby: go to the other broker if it sees that one alive, else ask
                    # again here in a moment (it takes over once its peer is silent: we voted for that)
                    # (the one we just left for dead still looks alive to it for a moment: stay then)
                    fled = time.monotonic() - self.fled < FAILOVER_AFTER
                    self._fail_over(flip=bool(h.get("peer_alive")) and not fled)
                    deadline = time.monotonic() + wait
                elif h.get("k") == wire.PROGRESS:
                    if on_progress and h.get("id") == rid:
                        deadline = time.monotonic() + wait  # long work that reports progress is alive
                        on_progress(h)
                elif h.get("id") in self.sent:
                    self.answers[h["id"]] = (h, out)
                    self._used(h["id"])
                # else: a late answer to a request that timed out
        except KeyboardInterrupt:
            raise
        except BaseException:
            del self.sent[rid]
            self.outbox.pop(rid, None)
            raise
        del self.sent[rid]
        self.outbox.pop(rid, None)
        h, out = self.answers.pop(rid)
        if not h.get("ok"):
            if h.get("cancelled"):
                raise Cancelled(h.get("error", "cancelled"), h.get("epochs", 0), h.get("steps", 0), h.get("history", ()))
            raise RemoteError(h.get("error", "unknown error"))
        return h, out

    def _next_poll(self, deadline):
        """Seconds to poll: to the deadline, but no longer than it takes to tell that nothing listens."""
        left = max(0.0, deadline - time.monotonic())
        return left if self.connected and not self.brokers.pair and not self.watch else min(left, 0.25)

    def _watch_pair(self, op):
        """A pair's client hears nothing: ask; after FAILOVER_AFTER of silence, move to the
        other broker. True if it moved. MeshTimeout when neither accepts a connection."""
        now = time.monotonic()
        events = sockets.monitor_events(self.monitor)
        dropped = zmq.EVENT_DISCONNECTED in events  # a dead broker's host closes its connections
        self.connected |= any(e != zmq.EVENT_DISCONNECTED for e in events)
        if dropped or now - self.heard > FAILOVER_AFTER:
            self.unreachable = 0 if self.connected else self.unreachable + 1
            if self.unreachable >= len(self.brokers.all):
                raise MeshTimeout(f"no broker answers at {self.brokers}: neither accepted a connection within "
                                  f"{FAILOVER_AFTER:g}s (are `mesh broker` processes running there?); {op!r} "
                                  f"not answered{self._hint()}")
            self._fail_over()
            self.fled = now
            return True
        if now - self.heard > PING_EVERY and now - self.pinged > PING_EVERY:
            self.pinged = now
            try:
                sockets.send(self.sock, {"k": wire.PING, "id": 0}, flags=zmq.NOBLOCK)
            except zmq.Again:
                pass
        return False

    def _before(self, rid, net):
        """The remembered predict a backprop (request rid) on net trains on: the last one before it."""
        return next((k for k in reversed(self.kept) if k[1] == net and k[0] < rid), None)

    def _used(self, rid):
        """An answered backprop has used its network's remembered predict."""
        header = self.outbox.get(rid, ({},))[0]
        if header.get("k") == wire.BACKPROP:
            kept = self._before(rid, header.get("net"))
            if kept is not None:
                kept[4] = True

    def _fail_over(self, flip=True):
        """Talk to the other broker of the pair (flip) and ask it again what is unanswered; or
        ask the same one again in a moment (once, however many refusals come meanwhile)."""
        if not flip:
            self.resend_at = self.resend_at or time.monotonic() + PING_EVERY / 2
            return
        self.sock.disable_monitor()
        self.monitor.close(linger=0)
        self.sock.close(linger=0)
        self.brokers.next()
        self._open()
        self.resend_at = None
        self._resend()

    def _resend(self):
        """Every unanswered request, in order, with the remembered predicts that backprops still to
        come train on, answered or not: the new broker does not hold their passes. (Those are the
        one before each unanswered backprop, and each network's last one no backprop has used.)"""
        again = {rid: self.outbox[rid] for rid in self.sent}
        for rid in list(again):
            kept = self._before(rid, again[rid][0].get("net")) if again[rid][0]["k"] == wire.BACKPROP else None
            if kept is not None:
                again.setdefault(kept[0], (kept[2], kept[3]))
        for net in {k[1] for k in self.kept}:
            last = self._before(float("inf"), net)
            if not last[4]:
                again.setdefault(last[0], (last[2], last[3]))
        for rid in sorted(again):
            header, arrays = again[rid]
            sockets.send(self.sock, header, arrays, flags=zmq.NOBLOCK)

    def _check_connected(self, op):
        self.connected |= any(e != zmq.EVENT_DISCONNECTED for e in sockets.monitor_events(self.monitor))
        if not self.connected and time.monotonic() - self.born > CONNECT_GRACE:
            raise MeshTimeout(f"no broker answers at {self.address}: nothing accepted a connection within "
                              f"{CONNECT_GRACE:g}s (is `mesh broker` or `mesh up` running there?); {op!r} not sent"
                              f"{self._hint()}")

    def _route(self, net):
        """A lease for predicts that skip the broker (direct.py), or None if it refuses one."""
        try:
            return self.request(wire.ROUTE, net=net)[0]
        except RemoteError:
            return None

    def _hint(self):
        """Keys could be why a broker is silent only if it accepted the connection (a broker with keys
        drops a client without them after the handshake) and never answered this client."""
        if self.keys or self.spoken or not self.connected:
            return ""
        return " (if the broker uses keys, set MESH_KEYS to a folder with client keys)"

    def create(self, sizes, group_size=None, seed=0, activation="sigmoid", output="sigmoid", loss="mse",
               dtype="float32", placement=None, timeout=None, init="auto", optimizer=None, inputs=None):
        """Start a network of `sizes` (hidden layers then outputs); the input width comes from the data.
        placement: {layer number (1 = first hidden): host address or worker name} pins layers.
        init: "auto" or "glorot" (scikit-learn's; see spec.initial_layer).
        group_size: None (a process per layer, cut only as memory budgets require), K neurons, or
        "balanced" (about the same work in every process).
        optimizer: what to plan memory for on workers with budgets (default adam, the most any
        training keeps; a training run with more re-checks the budgets).
        inputs: {layer: [sources]}, what a layer reads (0: the rows), concatenated in that order,
        e.g. {2: [1, 0], 3: [2, 1, 0]}; a layer not named reads the one before it."""
        spec = Spec(list(sizes) if not isinstance(sizes, int) else [sizes], activation, output, loss, dtype,
                    group_size, seed, init, inputs)
        h, _ = self.request(wire.CREATE, spec=spec.to_dict(), placement=placement or {}, timeout=timeout,
                            optimizer=optimizer)
        return Network(self, h["net"], spec)

    def network(self, net_id):
        """A handle on a network that already runs (made by another client, say); its
        status record (sizes, inputs, output, loss, target...) is in .info."""
        for n in self.status()["networks"]:
            if n["net"] == net_id:
                net = Network(self, net_id, None)
                net.info = n
                return net
        raise RemoteError(f"unknown network {net_id!r}")

    def status(self):
        """Of the active broker (a pair's client); of the one broker asked, standby or not, otherwise."""
        h, _ = self.request(wire.STATUS, pair=self.brokers.pair)
        return {k: h[k] for k in ("broker", "workers", "networks")}

    def load(self, path, timeout=None):
        """Start a network from a file written by Network.save."""
        return self.load_state(*read(path), timeout=timeout)

    def load_state(self, meta, arrays, timeout=None):
        """Start a network from Network.state()'s plain data."""
        h, _ = self.request(wire.LOAD, arrays, spec=meta["spec"], encoder=meta["encoder"],
                            optimizer=meta["optimizer"], timeout=timeout)
        return Network(self, h["net"], Spec(**meta["spec"]))


class Network:
    def __init__(self, client, net_id, spec):
        self.client, self.id, self.spec = client, net_id, spec
        self.info = None

    def __repr__(self):
        return f"Network({self.id!r}, sizes={self.spec.sizes if self.spec else '?'})"

    def _call(self, op, arrays=(), **fields):
        return self.client.request(op, arrays, net=self.id, **fields)

    def predict(self, rows, remember=True, chunk=None, strict=True):
        """Outputs for one row (1-D result) or many (rows x outputs). With
        remember, the pass is kept so that backprop can train on it.
        The rule for values: a number is used as it is; None or NaN is a missing value
        (it contributes nothing); infinity is refused; text is a factor. strict refuses
        text at a position that only ever held numbers in training, and rows of another
        width than training's when training saw only rows of one width holding only
        numbers (the error names both widths); strict=False takes them (a position not
        given contributes nothing, one training never saw is ignored)."""
        single = _is_single_row(rows)
        if not remember and self.client.direct is not None and (chunk is None or int(chunk) >= 1):
            out = self.client.direct.predict(self.id, rows, strict=bool(strict), chunk=chunk or 256)
            if out is not None:
                return out[0] if single else out
        fields, arrays = table.from_rows(rows)
        h, out = self._call(wire.PREDICT, arrays, keep=bool(remember), chunk=chunk, strict=bool(strict), **fields)
        return out[0][0] if single else out[0]

    def backprop(self, targets, learning_rate=0.1):
        """One optimizer step of the loss on the last predict; returns that loss."""
        T = np.asarray(targets, dtype=np.float64)
        h, _ = self._call(wire.BACKPROP, [T], learning_rate=learning_rate)
        return h["loss"]

    def online(self, X, Y, learning_rate=0.1, window=8):
        """Online training: predict each row, then backprop its target, in order:
        the same steps as calling predict and backprop row by row, with up to
        `window` rows in flight (the groups apply each step before the next
        row's forward). Returns (outputs before each row's step, loss of each row).
        Network.cancel() (from any client) or Ctrl-C stops it after the steps in
        flight: it raises Cancelled with the rows done (Ctrl-C: KeyboardInterrupt)."""
        X = table.each_row(X)
        Y = np.asarray(Y, dtype=np.float64).reshape(len(X), -1)
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        run = os.urandom(8).hex()  # names this run to the broker, so that a cancel can stop it
        outputs, losses, flying = [None] * len(X), [None] * len(X), []
        done = 0
        try:
            for i in range(len(X)):
                fields, arrays = X[i]
                flying.append((i, self.client.send(wire.PREDICT, arrays, net=self.id, keep=True, **fields),
                               self.client.send(wire.BACKPROP, [Y[i:i + 1]], net=self.id,
                                                learning_rate=learning_rate, run=run)))
                while len(flying) >= window or (flying and i == len(X) - 1):
                    j, p, b = flying[0]
                    outputs[j] = self.client.wait(p)[1][0][0]
                    losses[j] = self.client.wait(b)[0]["loss"]
                    flying.pop(0)
                    done += 1
        except Cancelled as e:
            raise Cancelled(f"the online run on network {self.id} was cancelled after {done} rows",
                            steps=done) from e
        except KeyboardInterrupt:
            self.cancel()
            raise
        finally:
            for _, p, b in flying:  # after an error: forget what is still in flight
                for rid in (p, b):
                    self.client.forget(rid)
        return np.array(outputs), np.array(losses)

    def train(self, X, Y, epochs=1, batch_size=32, learning_rate=0.1, micro_batches=None, optimizer="sgd",
              shuffle=True, seed=0, mode="exact", progress=None, checkpoint_every=0, checkpoint_path=None,
              on_epoch=None, tol=0.0, n_iter_no_change=None):
        """Mini-batch training on the mesh, all epochs in one run; returns the mean loss of each epoch.
        on_epoch(epoch, loss) is called as each epoch ends (epoch counts from 1).
        n_iter_no_change=N stops the run early once the epoch's loss has not improved on the best
        by tol for N epochs in a row (as scikit-learn's MLP stops).
        A loss that is not a finite number stops the run: RemoteError naming the step.
        checkpoint_every=N writes the network every N steps (and at the end) to the file named
        checkpoint_path inside the broker's checkpoint folder; its full path on the broker's host is
        kept in self.last_checkpoint, for Client.load after a broker restart.
        Network.cancel() (from any client) stops it at a step boundary: it raises Cancelled
        with the epochs and steps completed. Ctrl-C cancels it, then raises KeyboardInterrupt
        (self.last_cancel says how far it got)."""
        fields, arrays = table.from_rows(X)
        Y = np.asarray(Y, dtype=np.float64)
        opts = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                "micro_batches": micro_batches, "optimizer": optimizer, "shuffle": shuffle, "seed": seed,
                "mode": mode, "checkpoint_every": checkpoint_every,
                "checkpoint_path": str(checkpoint_path) if checkpoint_path else None, "tol": float(tol),
                "n_iter_no_change": None if n_iter_no_change is None else int(n_iter_no_change)}
        self.last_cancel = None
        with RunProgress(epochs * len(Y), progress, on_epoch) as shown:
            rid = self.client.send(wire.TRAIN, arrays + [Y], net=self.id, options=opts, **fields)
            try:
                h, _ = self.client.wait(rid, shown.report)
            except KeyboardInterrupt:
                self.last_cancel = self._cancel_and_wait(rid)
                raise KeyboardInterrupt(str(self.last_cancel)) from None
            shown.finished(h["history"])
        self.last_checkpoint = h.get("checkpoint")
        return h["history"]

    def _cancel_and_wait(self, rid):
        """After Ctrl-C in train: cancel it, and wait for its end (a Cancelled, normally)."""
        self.cancel()
        try:
            self.client.wait(rid)
        except Cancelled as e:
            return e
        except (RemoteError, MeshTimeout) as e:
            return Cancelled(f"training ended while being cancelled: {e}")
        return Cancelled("training finished before the cancel reached it")

    def cancel(self):
        """Stop this network's training run at a step boundary, and its online runs at their
        next step, from any client: every step already sent is applied everywhere, and the
        network is ready for a new run. Returns the broker's account of what it stopped."""
        h, _ = self._call(wire.CANCEL)
        return {k: h[k] for k in ("cancelled", "epochs", "steps", "state") if k in h}

    def weights(self):
        """[(W, b), ...] per layer, W shaped (outputs, inputs); fetched a layer at a time."""
        return [(W, b) for _, (W, b) in self._each_layer()]

    def layer(self, i):
        """(W, b) of layer i (0 = the first hidden layer)."""
        _, out = self._call(wire.WEIGHTS, layer=i)
        return out[0], out[1]

    def _each_layer(self):
        """(header, (W, b)) of every layer, one request each."""
        layer, layers = 0, 1
        while layer < layers:
            h, out = self._call(wire.WEIGHTS, layer=layer)
            layers = h["layers"]
            yield h, (out[0], out[1])
            layer += 1

    def set_weights(self, layers):
        """Replace every layer's (W, b); optimizer state starts afresh."""
        self._call(wire.SET_WEIGHTS, [np.asarray(a) for W, b in layers for a in (W, b)])

    def steps(self):
        """{gid: optimizer steps applied by that group}: every group should agree."""
        return {gid: t for h, _ in self._each_layer() for gid, t in h["steps"].items()}

    def processes(self):
        """One record per group process: gid, layer, neurons [lo, hi), pid, host, worker."""
        h, _ = self._call(wire.PROCESSES)
        return h["processes"]

    def save(self, path):
        """Weights, optimizer state, encoder and spec, as plain data (npz with a JSON member),
        written a layer at a time: neither this process nor the broker holds the network whole."""
        with Writer(path) as w:
            metas = []
            for h, layer, layers, (W, b, *slots) in self._saved_layers():
                w.add(2 * layer, W)
                w.add(2 * layer + 1, b)
                for i, s in enumerate(slots):
                    w.add(slot_index(layers, layer, len(slots)) + i, s)
                metas.extend(h["optimizer"])
            w.finish({"spec": h["spec"], "encoder": h["encoder"], "optimizer": metas})

    def state(self):
        """(meta, arrays): spec, encoder and optimizer settings as plain data, then the arrays
        (W, b of every layer, then every layer's optimizer slots), as a checkpoint holds them."""
        params, slots, metas = [], [], []
        for h, _, _, (W, b, *layer_slots) in self._saved_layers():
            params += [W, b]
            slots += layer_slots
            metas.extend(h["optimizer"])
        return {"spec": h["spec"], "encoder": h["encoder"], "optimizer": metas}, params + slots

    def _saved_layers(self):
        """(header, layer, layers, [W, b, *optimizer slots]) of each layer, one request each."""
        layer, layers = 0, 1
        while layer < layers:
            h, out = self._call(wire.SAVE, layer=layer)
            layers = h["layers"]
            yield h, layer, layers, out
            layer += 1

    def drop(self):
        """End this network's processes."""
        if self.client.direct is not None:
            self.client.direct.forget(self.id)
        self._call(wire.DROP)


def _is_single_row(rows):
    if isinstance(rows, np.ndarray):
        return rows.ndim == 1
    if hasattr(rows, "columns") or isinstance(rows, table.Rows):
        return False
    rows = list(rows) if not isinstance(rows, list) else rows
    return bool(rows) and not isinstance(rows[0], (list, tuple, np.ndarray))
