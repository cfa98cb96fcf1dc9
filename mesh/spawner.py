"""The worker's nanny: a child forked before the worker makes its zmq context,
so it can fork group processes cheaply (numpy and zmq already imported, no
context inherited). It talks to the worker over two pipes in JSON lines,
reports every exit, and ends all its groups when the worker goes away. It
removes what a group left in the worker's state folder once it has reaped
it, and the whole folder when the worker is gone (killed, even)."""
import gc
import json
import os
import resource
import select
import shutil
import signal
import sys
import time
import traceback

from .lifecycle import die_with_parent, name_process, return_freed_memory


class Spawner:
    """The worker's handle on the spawner process."""

    def __init__(self, state_dir=None):
        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(down_w)
            os.close(up_r)
            code = 0
            try:
                _serve(down_r, up_w, state_dir)
            except BaseException:
                traceback.print_exc()
                code = 1
            os._exit(code)
        os.close(down_r)
        os.close(up_w)
        self._to = down_w
        self._from = up_r
        os.set_blocking(up_r, False)
        self._buf = b""

    def fileno(self):
        return self._from

    def spawn(self, gid, config):
        self._say({"op": "spawn", "gid": gid, "config": config})

    def kill(self, gid, sig=signal.SIGTERM, pid=None):
        """End group gid (only its process `pid`, when given)."""
        self._say({"op": "kill", "gid": gid, "pid": pid, "sig": int(sig)})

    def _say(self, msg):
        os.write(self._to, (json.dumps(msg) + "\n").encode())

    def events(self):
        """Reports ready to read: {"op": "spawned"|"exited", "gid", "pid", ...}."""
        try:
            while chunk := os.read(self._from, 65536):
                self._buf += chunk
        except BlockingIOError:
            pass
        *lines, self._buf = self._buf.split(b"\n")
        return [json.loads(line) for line in lines if line]

    def close(self):
        """Closing our end tells the spawner to end its groups and exit."""
        for fd in (self._to, self._from):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _serve(cmd_fd, report_fd, state_dir=None):
    die_with_parent(signal.SIGTERM)
    name_process("mesh spawner")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the worker, which closes our pipe
    children = {}  # pid -> gid
    buf = b""

    def report(msg):
        if msg["op"] == "exited" and state_dir:  # its snapshot files (keeper.py), whatever ended it
            shutil.rmtree(os.path.join(state_dir, f"{msg['gid']}-{msg['pid']}"), ignore_errors=True)
        try:
            os.write(report_fd, (json.dumps(msg) + "\n").encode())
        except BrokenPipeError:
            pass  # the worker is gone: the command pipe's end says so next, and everything is ended

    def end_all():
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in list(children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        if state_dir:  # the worker is gone: nothing of its groups stays on disk
            shutil.rmtree(state_dir, ignore_errors=True)

    signal.signal(signal.SIGTERM, lambda *_: (end_all(), os._exit(0)))
    from . import group  # noqa: F401  imported once here, shared by every group forked from here
    gc.freeze()  # what is here now is never collected: its pages stay shared with every child
    while True:
        ready, _, _ = select.select([cmd_fd], [], [], 0.05)
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            gid = children.pop(pid, None)
            report({"op": "exited", "gid": gid, "pid": pid, "code": os.waitstatus_to_exitcode(status)})
        if not ready:
            continue
        chunk = os.read(cmd_fd, 65536)
        if not chunk:  # the worker is gone
            end_all()
            return
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            msg = json.loads(line)
            if msg["op"] == "spawn":
                for pid, status in _await_exit(children, msg["gid"]):
                    report({"op": "exited", "gid": msg["gid"], "pid": pid, "code": os.waitstatus_to_exitcode(status)})
                pid = _fork_group(msg["config"], (cmd_fd, report_fd))
                children[pid] = msg["gid"]
                report({"op": "spawned", "gid": msg["gid"], "pid": pid})
            elif msg["op"] == "kill":
                for pid, gid in children.items():
                    if gid == msg["gid"] and msg.get("pid") in (None, pid):
                        os.kill(pid, msg["sig"])


def _await_exit(children, gid, seconds=2.0):
    """[(pid, status)] of the earlier processes of group gid, reaped: one just killed may still
    hold the unix socket name its successor binds. Gives up on one still alive after `seconds`."""
    deadline = time.monotonic() + seconds
    reaped = []
    for pid in [p for p, g in children.items() if g == gid]:
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                del children[pid]
                reaped.append((pid, status))
                break
            time.sleep(0.005)
    return reaped


def _more_files():
    """As many file descriptors as the host allows: a group of one neuron has a socket, and
    connections, for each of hundreds of neighbours."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _fork_group(config, fds):
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        for fd in fds:
            os.close(fd)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        die_with_parent(signal.SIGKILL)
        _more_files()
        name_process(f"mesh group {config['gid']}")
        return_freed_memory()  # what the memory model plans is what stays resident
        from .group import main
        main(config)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
