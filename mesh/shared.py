"""One embedded local mesh per process, shared by every estimator of that process
that was given no mesh of its own (so GridSearchCV and cross_val_score fit all
their clones on one mesh), started on first use and ended at exit.

A forked child (a joblib or multiprocessing worker) starts its own on first use
and ends it at its own exit; the parent's is left to the parent. If a process
dies without running its exit handlers, its mesh dies with it (the mesh's
processes die with their parent, localmesh.py)."""
import atexit
import os
import queue
import threading

from .localmesh import LocalMesh

WORKERS = 2
_lock = threading.Lock()
_mesh = None   # this process's LocalMesh
_owner = None  # the pid that started it


def client():
    """The Client of this process's shared mesh, started now if it is not running."""
    global _mesh, _owner
    with _lock:
        if _mesh is None or _owner != os.getpid():
            _mesh, _owner = _started(), os.getpid()
        return _mesh.client


def _started():
    """A started LocalMesh. Its processes die with the thread that started them (the kernel's
    parent-death signal follows the thread), so from any thread but the main one it is started
    by a thread that lasts as long as the process: not by a pool's thread that may end."""
    if threading.current_thread() is threading.main_thread():
        mesh = LocalMesh(workers=WORKERS, timeout=600)
        mesh.start()
        return mesh
    told = queue.Queue()

    def keep():
        try:
            mesh = LocalMesh(workers=WORKERS, timeout=600)
            mesh.start()
        except BaseException as e:  # given to the caller, raised there
            told.put(e)
            return
        told.put(mesh)
        threading.Event().wait()  # a daemon thread: it ends with the process
    threading.Thread(target=keep, name="mesh-shared", daemon=True).start()
    got = told.get()
    if isinstance(got, BaseException):
        raise got
    return got


def running():
    """Whether this process has started its shared mesh (and not ended it)."""
    return _mesh is not None and _owner == os.getpid()


def stop():
    """End this process's shared mesh (at exit; a later estimator would start another)."""
    global _mesh, _owner
    with _lock:
        if running():
            _mesh.stop()
        _mesh, _owner = None, None


def _forget_in_child():
    """A forked child inherits the parent's handle, sockets and all: never use or end it."""
    global _mesh, _owner, _lock
    _mesh, _owner, _lock = None, None, threading.Lock()


atexit.register(stop)
os.register_at_fork(after_in_child=_forget_in_child)


def connect(mesh):
    """A Client for an estimator's mesh= setting: None (the shared mesh), an address, or a Client."""
    if mesh is None:
        return client()
    if isinstance(mesh, str):
        return _dialled(mesh)
    return mesh


_dialled_clients = {}


def _dialled(address):
    """One Client per address and process, for estimators given a mesh's address."""
    key = (os.getpid(), address)
    if key not in _dialled_clients:
        from .client import Client
        _dialled_clients[key] = Client(address, timeout=600)
    return _dialled_clients[key]
