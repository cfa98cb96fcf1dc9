"""A handle on one network at the broker: predict, train, save, drop... Each call is
a request through its client (client.py); a predict with a lease skips the broker
(direct.py)."""
import os

import numpy as np

from . import table, wire
from .checkpoint import Writer, slot_index
from .errors import Cancelled, MeshTimeout, RemoteError
from .progress import RunProgress

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
              on_epoch=None, tol=0.0, n_iter_no_change=None, resident=None):
        """Mini-batch training on the mesh, all epochs in one run; returns the mean loss of each epoch.
        on_epoch(epoch, loss) is called as each epoch ends (epoch counts from 1).
        n_iter_no_change=N stops the run early once the epoch's loss has not improved on the best
        by tol for N epochs in a row (as scikit-learn's MLP stops).
        resident: in exact mode, the rows and targets go to each host once and the groups make
        every step themselves (no message per step); None: the broker's default, False: the
        broker sends each step. Async mode, and softmax over several output groups, are always
        sent by the broker.
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
        if resident is not None:
            opts["resident"] = bool(resident)
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
        self.last_resident = h.get("resident")  # whether the run's data was resident in the mesh
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
