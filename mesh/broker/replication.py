"""What an active broker ships to its standby, and how the standby keeps it.

The active ships the state a failover cannot rebuild from the groups: the
workers, each network's record (spec, encoder, placement, token, state,
generation, step counters, which snapshot is whole and who holds it), its
step log since that snapshot (the rows of each step: data, never weights),
the data and position of an exact training run, and the answers given
(answers.py). One sync ships what changed since the last, then a COMMIT;
the standby applies a sync whole or not at all, and acknowledges each
commit. No client hears of an effect the standby would not know: the answer
to a request with an effect waits for the commit that covers it
(pairing.py); and a snapshot's SNAP (which lets groups forget the older one)
waits for the commit that says which snapshot is whole.

A record is one SHIP message: a small header ("seq", "what"), its JSON
body as a byte array, and the numpy arrays it carries. Records are numbered:
the standby that misses one asks for everything again."""
import json

import numpy as np

from .. import wire
from .answers import Answers


def _dumps(value):
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def body_array(text):
    return np.frombuffer(text.encode(), dtype=np.uint8)


def trainer_record(train):
    if train is None or train.finished:
        return None
    return {"serial": train.serial, "client": train.client.hex() if train.client else None, "req": train.req,
            "timeout": train.timeout, "mark": train.mark, "steps": train.steps_done}


def net_record(net):
    return dict(net.to_dict(), trainer=trainer_record(net.trainer))


def broker_record(b):
    return {"made": b.made, "workers": {wid.hex(): w.to_dict() for wid, w in b.workers.items()}}


def log_entries(entries):
    """(JSON, arrays) of log entries: ("grow", header), ("optim", settings), ("step", id, micros, rows, lr)."""
    out, arrays = [], []
    for e in entries:
        if e[0] == "step":
            _, step, micros, batch_rows, lr = e
            out.append(["step", step, len(micros), batch_rows, lr])
            for X, T in micros:
                arrays += [X, T]
        else:
            out.append(list(e))
    return out, arrays


def entries_from(body, arrays):
    entries, at = [], 0
    for e in body:
        if e[0] == "step":
            _, step, n, batch_rows, lr = e
            micros = [(arrays[at + 2 * i], arrays[at + 2 * i + 1]) for i in range(n)]
            at += 2 * n
            entries.append(("step", step, micros, batch_rows, lr))
        else:
            entries.append(tuple(e))
    return entries


class Shipper:
    """The active side: what the standby has been sent, and what it has applied."""

    def __init__(self, send):
        self.send = send  # (header, arrays) -> False when it cannot be sent now
        self.seq = 0      # the last record shipped
        self.acked = 0    # the last commit the standby applied
        self.committed = 0
        self.reset()

    def reset(self):
        """The standby starts over (new, or lost): everything is shipped again."""
        self.fresh = True
        self.base = None  # the commit that completes the first sync since: the standby holds it all once acked
        self.last_broker, self.last_meta, self.last_log, self.last_train = None, {}, {}, {}
        self.last_answer = 0

    @property
    def lag(self):
        """Records the standby has yet to apply; None until it holds the whole state."""
        if self.base is None or self.acked < self.base:
            return None
        return self.committed - self.acked

    def ship(self, what, body, arrays=(), text=None):
        """One record; text: the body already as JSON (it was compared with the last one shipped)."""
        self.seq += 1
        frames = [body_array(text if text is not None else _dumps(body)), *arrays]
        if not self.send({"k": wire.SHIP, "seq": self.seq, "what": what}, frames):
            raise OverflowError("the standby does not keep up")

    def sync(self, b, answers):
        """Ship what changed in broker b (and its answers) since the last sync, and a commit;
        the commit's number (or the last one, when nothing changed)."""
        before = self.seq
        if self.fresh:
            self.ship("reset", {})
            self.fresh = False
        text = _dumps(broker_record(b))
        if text != self.last_broker:
            self.ship("broker", None, text=text)
            self.last_broker = text
        new = answers.since(self.last_answer) if answers.serial != self.last_answer else ()  # no scan when none
        if new:
            body = [[client.hex(), req, fields, len(arrays), effect] for (client, req), fields, arrays, effect in new]
            self.ship("answers", body, [a for _, _, arrays, _ in new for a in arrays])
            self.last_answer = answers.serial
        for nid, net in b.nets.items():
            self.sync_net(net)
        for nid in [n for n in self.last_meta if n not in b.nets]:
            self.ship("drop", {"net": nid})
            for known in (self.last_meta, self.last_log, self.last_train):
                known.pop(nid, None)
        if self.seq != before:
            self.ship("commit", {})
            self.committed = self.seq
            if self.base is None:
                self.base = self.seq
        return self.committed

    def sync_net(self, net):
        text = _dumps(net_record(net))
        if text != self.last_meta.get(net.id):
            self.ship("net", None, text=text)
            self.last_meta[net.id] = text
        shipped_list, shipped_len = self.last_log.get(net.id, (None, 0))
        if net.log is not shipped_list or len(net.log) < shipped_len:  # a snapshot cut it: all again
            body, arrays = log_entries(net.log)
            self.ship("log", {"net": net.id, "reset": True, "entries": body}, arrays)
        elif len(net.log) > shipped_len:
            body, arrays = log_entries(net.log[shipped_len:])
            self.ship("log", {"net": net.id, "reset": False, "entries": body}, arrays)
        self.last_log[net.id] = (net.log, len(net.log))
        train = net.trainer
        if train is not None and self.last_train.get(net.id) != train.serial:
            body = {"net": net.id, "serial": train.serial, "opts": train.opts}
            self.ship("train", body, [train.X, train.Y])
            self.last_train[net.id] = train.serial


class Shadow:
    """The standby side: the active's state as of its last commit."""

    def __init__(self):
        self.broker = None
        self.answers = Answers()
        self.nets = {}     # id -> {"meta": ..., "log": [...], "train": (body, X, Y) or None}
        self.pending = []  # records of the sync under way
        self.applied = 0   # the last commit applied
        self.whole = False  # a reset and a commit since: it holds the active's whole state
        self.seen = None   # the last record's number: one missing (zmq drops them on a reconnect) breaks the stream
        self.broken = False

    def take(self, h, arrays):
        """Apply one SHIP; the seq to acknowledge once it completes a sync, else None; "gap"
        when a record is missing: nothing more is applied until the active starts over."""
        seq, what = h["seq"], h["what"]
        gap = self.seen is not None and seq != self.seen + 1
        self.seen = seq
        if what == "reset":
            self.pending, self.broken = [], False
        elif gap or self.broken:
            self.pending = []
            first, self.broken = not self.broken, True
            return "gap" if first else None
        body = json.loads(bytes(arrays[0]).decode())
        self.pending.append((h["what"], body, list(arrays[1:])))
        if h["what"] != "commit":
            return None
        for what, body, data in self.pending:
            self.apply(what, body, data)
        self.pending = []
        self.applied = h["seq"]
        return self.applied

    def apply(self, what, body, data):
        if what == "reset":
            self.broker, self.nets, self.whole, self.answers = None, {}, True, Answers()
        elif what == "broker":
            self.broker = body
        elif what == "answers":
            at = 0
            for client, req, fields, n, effect in body:
                self.answers.add((bytes.fromhex(client), req), fields, data[at:at + n], effect)
                at += n
        elif what == "net":
            self.nets.setdefault(body["id"], {"log": [], "train": None})["meta"] = body
        elif what == "log":
            entry = self.nets.setdefault(body["net"], {"log": [], "train": None})
            entries = entries_from(body["entries"], data)
            entry["log"] = entries if body["reset"] else entry["log"] + entries
        elif what == "train":
            self.nets.setdefault(body["net"], {"log": [], "train": None})["train"] = (body, data[0], data[1])
        elif what == "drop":
            self.nets.pop(body["net"], None)
