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


def write(path, meta, arrays):
    named = {f"a{i:04d}": a for i, a in enumerate(arrays)}
    blob = json.dumps(dict(meta, format=FORMAT, arrays=len(arrays))).encode()
    tmp = f"{path}.partial"
    with open(tmp, "wb") as f:  # written aside, then renamed: a crash never leaves half a checkpoint
        np.savez(f, **{"meta.json": np.frombuffer(blob, dtype=np.uint8)}, **named)
    os.replace(tmp, path)


def read(path):
    try:
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
