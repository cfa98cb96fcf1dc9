"""A resident run's rows and targets on a worker's host (broker/resident.py): the broker
streams each array in bounded parts (STAGE), the worker writes them into one .npy file
in its state folder, and every group of the run on this host maps that file read-only
(rundata.py): one copy per host, whatever the number of groups.

A file is written under a temporary name and renamed once whole, so a group never maps
half of one, and one staged again (a recovery, a standby's takeover) replaces it while
groups that mapped the old one keep reading theirs."""
import glob
import os
import re

import numpy as np
from numpy.lib.format import open_memmap

from . import wire

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a run's files: n3-1a2b3c4d-X; never a path


def path_of(folder, name, part):
    if not NAME.fullmatch(name) or part not in ("X", "Y"):
        raise ValueError(f"a staged file named {name!r} {part!r}")
    return os.path.join(folder, f"run-{name}-{part}.npy")


def stage(folder, h, arrays):
    """File one part of a staged array; True once the file is whole."""
    path = path_of(folder, h["name"], h["part"])
    rows, cols = (int(v) for v in h["shape"])
    dtype = wire.DTYPES[h["dtype"]]
    at = int(h["at"])
    (a,) = arrays
    if a.ndim != 2 or a.shape[1] != cols or not 0 <= at <= rows - len(a) or a.dtype != dtype:
        raise ValueError(f"a part of {a.dtype} {list(a.shape)} at row {at} of a {dtype} file of {rows} x {cols}")
    tmp = path + ".part"
    if at == 0:
        if h["part"] == "X":  # a network's older run (its broker failed over before removing them) goes
            older(folder, h["name"])
        m = open_memmap(tmp, "w+", dtype, (rows, cols))
    else:
        m = open_memmap(tmp, "r+")
        if m.shape != (rows, cols) or m.dtype != dtype:
            raise ValueError(f"a part for {path}, which has another shape")
    m[at:at + len(a)] = a
    m.flush()
    del m
    if at + len(a) < rows:
        return False
    os.replace(tmp, path)
    return True


def unstage(folder, name):
    """Remove a run's files (the run or its network ended)."""
    for part in ("X", "Y"):
        path = path_of(folder, name, part)
        for f in glob.glob(glob.escape(path) + "*"):
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass


def older(folder, name):
    """Remove the files of the same network's other runs: one runs at a time."""
    net = name.rsplit("-", 1)[0]
    for f in glob.glob(os.path.join(glob.escape(folder), f"run-{glob.escape(net)}-*")):
        if not os.path.basename(f).startswith(f"run-{name}-"):
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass


def mapped(folder, name, part):
    """A staged file, mapped read-only."""
    return np.load(path_of(folder, name, part), mmap_mode="r")
