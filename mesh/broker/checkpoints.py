"""Checkpoints to disk during training, a layer at a time: the broker holds
one layer's arrays while it writes them, never the whole network."""
import os
import re

from ..checkpoint import Writer, slot_index
from .jobs import Collect, Job

LAYER_TIMEOUT = 600.0
CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def checkpoint_path(folder, name):
    """Where a client's checkpoint goes: a plain file name, inside the broker's checkpoint folder only."""
    if not isinstance(name, str) or not CHECKPOINT_NAME.fullmatch(name):  # no folders, no ..
        raise ValueError(f"checkpoint name {name!r}: use letters, digits, '.', '_' or '-' "
                         f"(it is written inside the broker's folder {folder})")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return os.path.join(folder, name)


class WriteCheckpoint(Job):
    """Collect each layer's state in turn (after every step sent) and append it to the
    file; then() once the file is whole, failed(error) if it cannot be written."""

    def __init__(self, ports, net, path, extra, then, failed):
        super().__init__(ports, net, None, None, LAYER_TIMEOUT)
        self.path, self.extra, self.then, self.failed = path, extra, then, failed

    def run(self):
        self.layer, self.metas, self.writer = 0, [], None
        try:
            self.writer = Writer(self.path)
        except OSError as e:
            return self.give_up(e)
        self.next_layer()

    def restart(self):
        """A recovery restarts the layer's Collect itself; the layers written stay right
        (the recovery brings the network back to the same step)."""

    def next_layer(self):
        if self.layer == len(self.net.layers):
            return self.finish()
        self.progress()
        Collect(self.ports, self.net, None, None, LAYER_TIMEOUT, self.write_layer, self.layer).begin()

    def write_layer(self, collect, layers, optim):
        collect.end()
        (W, b), (meta, slots) = layers[0], optim[0]
        n, layer = len(self.net.layers), self.layer
        try:
            self.writer.add(2 * layer, W)
            self.writer.add(2 * layer + 1, b)
            for i, s in enumerate(slots):
                self.writer.add(slot_index(n, layer, len(slots)) + i, s)
        except OSError as e:
            return self.give_up(e)
        self.metas.append(dict(meta, slots=len(slots)))
        self.layer += 1
        self.next_layer()

    def finish(self):
        meta = {"spec": self.net.spec.to_dict(), "encoder": self.net.encoder.to_dict(), "optimizer": self.metas,
                **self.extra}
        try:
            self.writer.finish(meta)
        except OSError as e:
            return self.give_up(e)
        self.end()
        self.then()

    def give_up(self, error):
        self.end()
        if self.writer is not None:
            self.writer.abandon()
        self.failed(f"cannot write checkpoint {self.path}: {error}")

    def fail(self, error, **fields):
        if not self.finished:
            self.give_up(error)
