"""Checkpoints as plain data: one .npz of named arrays plus a JSON member
"meta.json" (spec, encoder, optimizer settings). Loaded strictly, never with
pickle."""
import json
import os
import zipfile

import numpy as np

FORMAT = "neuromesh-checkpoint-1"


class CheckpointError(ValueError):
    """A file that is not a checkpoint we wrote, or one that does not fit."""


def pack_state(net, layers, optim):
    """(meta, arrays) of a network's state: W, b per layer, then each layer's optimizer slots."""
    arrays = [a for W, b in layers for a in (W, b)]
    metas = []
    for meta, slots in optim:
        metas.append(dict(meta, slots=len(slots)))
        arrays += slots
    return {"spec": net.spec.to_dict(), "encoder": net.encoder.to_dict(), "optimizer": metas}, arrays


def slot_index(layers, layer, slots):
    """Where layer `layer`'s first optimizer slot goes, when every layer has `slots`."""
    return 2 * layers + layer * slots


def write(path, meta, arrays):
    with Writer(path) as w:
        for i, a in enumerate(arrays):
            w.add(i, a)
        w.finish(meta)


class Writer:
    """A checkpoint written array by array, so that no one process ever holds a
    whole network to save it: the same .npz layout np.savez makes. Written
    aside, then renamed by finish(): a crash never leaves half a checkpoint."""

    def __init__(self, path):
        self.path, self.tmp = path, f"{path}.partial"
        self.zip = zipfile.ZipFile(self.tmp, "w", allowZip64=True)
        self.count = 0

    def add(self, index, array):
        with self.zip.open(f"a{index:04d}.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)
        self.count += 1

    def finish(self, meta):
        blob = json.dumps(dict(meta, format=FORMAT, arrays=self.count)).encode()
        with self.zip.open("meta.json.npy", "w") as f:
            np.lib.format.write_array(f, np.frombuffer(blob, dtype=np.uint8), allow_pickle=False)
        self.zip.close()
        os.replace(self.tmp, self.path)
        self.zip = None

    def abandon(self):
        """Not finished: leave nothing behind."""
        if self.zip is not None:
            self.zip.close()
            os.remove(self.tmp)
            self.zip = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.abandon()

def declared(path):
    """Each member's declared bytes, read from its .npy header alone (nothing allocated), and
    checked against the size it really has in the archive: a header cannot promise more data
    than the file holds."""
    sizes = {}
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            with z.open(info) as f:
                version = np.lib.format.read_magic(f)
                header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
                if version not in header:
                    raise CheckpointError(f"{path}: member {info.filename} is .npy version {version}")
                shape, _, dtype = header[version](f, max_header_size=10_000)
                if dtype.hasobject:
                    raise CheckpointError(f"{path}: member {info.filename} holds Python objects")
                nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if nbytes > info.file_size:
                    raise CheckpointError(f"{path}: member {info.filename} declares {list(shape)} {dtype} "
                                          f"({nbytes} bytes) in {info.file_size} bytes")
                sizes[info.filename] = nbytes
    return sizes


def read(path, limit=None):
    """(meta, arrays) of a checkpoint; limit: the most bytes its arrays may take (checked
    before anything is allocated), by default this host's available memory."""
    try:
        total = sum(declared(path).values())
        limit = available_memory() if limit is None else limit
        if total > limit:
            raise CheckpointError(f"{path}: its arrays need {total} bytes, more than the {limit} available")
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta.json"].tobytes())
            if meta.get("format") != FORMAT:
                raise CheckpointError(f"{path}: not a neuromesh checkpoint (format {meta.get('format')!r})")
            arrays = [z[f"a{i:04d}"] for i in range(int(meta["arrays"]))]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path}: cannot read checkpoint: {e}") from None
    for key in ("spec", "encoder", "optimizer"):
        if key not in meta:
            raise CheckpointError(f"{path}: checkpoint has no {key!r}")
    return meta, arrays


def available_memory():
    """MemAvailable of this host, in bytes (the physical memory where /proc says nothing)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
