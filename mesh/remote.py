"""`mesh up --hosts hosts.txt`: the broker here, a worker on each listed host,
started over the system ssh client. A host that cannot be reached is named in
a clear error, and every process started is ended on the way out."""
import shlex
import subprocess
import time

from .localmesh import LocalMesh

SSH = "ssh -tt -o BatchMode=yes -o ConnectTimeout=5"  # -tt: closing ssh hangs up the remote worker


def read_hosts(path):
    """Host names (user@host allowed), one per line; blank lines and # comments ignored."""
    with open(path) as f:
        hosts = [line.split("#")[0].strip() for line in f]
    hosts = [h for h in hosts if h]
    if not hosts:
        raise ValueError(f"{path} lists no hosts")
    return hosts


class RemoteMesh(LocalMesh):
    def __init__(self, hosts, advertise, ssh=SSH, remote_command="mesh", **kw):
        super().__init__(workers=0, **kw)
        self.hosts, self.advertise, self.ssh, self.remote_command = hosts, advertise, ssh, remote_command

    def _dial_address(self, bound):
        return f"tcp://{self.advertise}:{bound.rsplit(':', 1)[1]}"

    def _client_address(self):  # this host may not reach its own advertised address when bound to 0.0.0.0
        return self.address.replace(self.advertise, "127.0.0.1") if self.bind.startswith("tcp://0.0.0.0") \
            else self.address

    def _start_workers(self):
        self.remote = {}
        for host in self.hosts:
            cmd = shlex.split(self.ssh) + [host] + shlex.split(self.remote_command) + [
                "worker", "--broker", self.address, *self.insecure, *self.keys_args]
            self.remote[host] = subprocess.Popen(cmd, process_group=self.pgid, stdin=subprocess.DEVNULL,
                                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self.procs.append(self.remote[host])

    def _wait_for_workers(self):
        deadline = time.monotonic() + self.start_timeout
        while True:
            for host, p in self.remote.items():
                if p.poll() is not None:
                    err = p.stderr.read().decode(errors="replace").strip().splitlines()
                    raise RuntimeError(f"worker host {host} could not be reached or its worker failed "
                                       f"(ssh exit {p.returncode}): {err[-1] if err else 'no message'}")
            joined = {w["host"] for w in self.client.status()["workers"]}
            if len(joined) >= len(self.hosts):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.hosts) - len(joined)} of {len(self.hosts)} worker hosts did not join "
                                   f"the broker at {self.address} within {self.start_timeout:g}s; can they reach it?")
            time.sleep(0.2)
