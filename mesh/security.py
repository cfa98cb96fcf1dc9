"""CurveZMQ keys: every socket encrypted and authenticated once a keys folder
is configured (MESH_KEYS or --keys).

The folder, as `mesh keys generate DIR` writes it (secret files 0600, folders 0700):

    broker.key, broker.key_secret      the broker's pair
    worker.key, worker.key_secret      the workers' pair (group processes use it too)
    client.key, client.key_secret      a client's pair
    allowed/mesh/*.key                 public keys that may join the mesh: the broker, workers
    allowed/clients/*.key              public keys that may use the broker as clients

The broker's client socket admits mesh and client keys; the broker's inbox and
every group's inbox admit mesh keys only, so a client, even an allowed one,
cannot push a single activation into a group. Copy the folder to each host;
give a host only the secret files it needs."""
import os
import shutil
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from . import settings

ROLES = ("broker", "worker", "client")


class KeyError_(ValueError):
    """A keys folder that is missing something, with what and where."""


def generate(directory, names=ROLES):
    """Write fresh key pairs and the allow-lists that admit them."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    for sub in ("allowed", "allowed/mesh", "allowed/clients"):
        (d / sub).mkdir(exist_ok=True)
        os.chmod(d / sub, 0o700)
    written = []
    for name in names:
        public, secret = zmq.auth.create_certificates(str(d), name)
        os.chmod(secret, 0o600)
        os.chmod(public, 0o600)
        allow(d, public, "clients" if name.startswith("client") else "mesh")
        written.append(name)
    return written


def allow(directory, public_key_file, kind):
    """Admit a public key: kind 'mesh' (broker, workers) or 'clients'."""
    if kind not in ("mesh", "clients"):
        raise KeyError_(f"kind must be mesh or clients, not {kind!r}")
    public_key_file = Path(public_key_file)
    zmq.auth.load_certificate(str(public_key_file))  # refuse a file that is not a key
    dest = Path(directory) / "allowed" / kind / public_key_file.name
    shutil.copyfile(public_key_file, dest)
    os.chmod(dest, 0o600)
    return dest


def revoke(directory, name):
    """Remove a public key from both allow-lists (for key rotation)."""
    removed = []
    for kind in ("mesh", "clients"):
        p = Path(directory) / "allowed" / kind / f"{name}.key"
        if p.exists():
            p.unlink()
            removed.append(p)
    return removed


def _allowed(directory, kind):
    d = Path(directory) / "allowed" / kind
    if not d.is_dir():
        return set()
    return {zmq.auth.load_certificate(str(p))[0] for p in d.glob("*.key")}


class Keys:
    """One process's keys: its own pair, the broker's public key, the allow-lists."""

    def __init__(self, directory, role):
        self.dir, self.role = Path(directory), role
        try:
            self.public, self.secret = zmq.auth.load_certificate(str(self.dir / f"{role}.key_secret"))
            self.broker_public, _ = zmq.auth.load_certificate(str(self.dir / "broker.key"))
        except (OSError, ValueError) as e:
            raise KeyError_(f"keys folder {self.dir} has no usable {role} key pair or broker.key: {e}") from None
        if self.secret is None:
            raise KeyError_(f"{self.dir / (role + '.key_secret')} holds no secret key")
        self.auth = None
        self.mesh_keys = set()

    def is_mesh(self, key):
        """Whether a peer's key (as the ZAP handler reported it) belongs to the mesh, not to a client."""
        return key in self.mesh_keys

    @classmethod
    def from_env(cls, role):
        """The keys of MESH_KEYS's folder (mesh.Client's default), or None."""
        d = settings.keys_dir()
        return cls(d, role) if d else None

    @classmethod
    def from_config(cls, config):
        """A group's keys: its worker's, whose folder the worker puts in the group's spawn config."""
        return cls(config["keys"], "worker") if config.get("keys") else None

    def serve(self, sock, domain):
        """A bound socket: encrypt, and admit only keys allowed in `domain` (mesh or front)."""
        sock.curve_secretkey, sock.curve_publickey, sock.curve_server = self.secret, self.public, True
        sock.zap_domain = domain.encode()

    def dial(self, sock, server_public):
        """A connecting socket: encrypt to a server whose public key we know."""
        sock.curve_secretkey, sock.curve_publickey = self.secret, self.public
        sock.curve_serverkey = server_public if isinstance(server_public, bytes) else server_public.encode()

    def start_authenticator(self, ctx):
        """The ZAP handler of this process: mesh keys for 'mesh', mesh and client keys for 'front'."""
        mesh_keys = _allowed(self.dir, "mesh")
        front_keys = mesh_keys | _allowed(self.dir, "clients")
        self.mesh_keys = {k.decode() if isinstance(k, bytes) else k for k in mesh_keys}  # z85, as ZAP reports them
        self.auth = ThreadAuthenticator(ctx)
        self.auth.start()
        self.auth.configure_curve_callback("mesh", credentials_provider=_Allow(mesh_keys))
        self.auth.configure_curve_callback("front", credentials_provider=_Allow(front_keys))
        return self.auth

    def stop(self):
        if self.auth is not None:
            self.auth.stop()
            self.auth = None


class _Allow:
    def __init__(self, keys):
        self.keys = keys

    def callback(self, domain, key):
        return key in self.keys


def is_loopback(address):
    """tcp://127.x / localhost / [::1] addresses, and ipc, reach no other host."""
    if address.startswith(("ipc://", "inproc://")):
        return True
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host.startswith("127.") or host in ("localhost", "::1")
