"""Where the dashboard listens, and whether it may: the same rule as the
broker's own address. Loopback is served as it is; any other address needs
a token (--dashboard-token, or one drawn at random when the mesh has keys)
or --insecure."""
import secrets
from dataclasses import dataclass

from ..security import is_loopback

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8787


class Refused(ValueError):
    """A dashboard address that is not allowed as asked, with what to do instead."""


@dataclass
class Listen:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = None
    fallback: bool = False  # the port is the default one: take any free port when it is in use
    warning: str | None = None


def parse(value):
    """'off' -> None; 'HOST:PORT' (or ':PORT', '[::1]:PORT') -> Listen; None -> the default address."""
    if value is None:
        return Listen(fallback=True)
    if value.strip().lower() == "off":
        return None
    host, sep, port = value.strip().rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise Refused(f"dashboard address {value!r}: give HOST:PORT (port 0: any free port) or off")
    return Listen(host.strip("[]") or DEFAULT_HOST, int(port))


def allowed(listen, token=None, keys=False, insecure=False):
    """The listen address with its token, or Refused for a non-loopback one left open."""
    if listen is None:
        return None
    listen.token = token or None
    if is_loopback(f"tcp://{listen.host}:{listen.port}") or listen.token:
        return listen
    if keys:  # the mesh is locked: lock its dashboard too, with a token shown only in the printed URL
        listen.token = secrets.token_urlsafe(18)
        return listen
    if not insecure:
        raise Refused(f"dashboard address {listen.host}:{listen.port} is reachable from other hosts and no "
                      f"token is set: anyone who reaches it could watch the mesh. Pass --dashboard-token TOKEN "
                      f"(or --keys DIR), --dashboard 127.0.0.1:PORT, or --insecure.")
    listen.warning = (f"WARNING: dashboard on {listen.host}:{listen.port} without a token: anyone who reaches "
                      f"it can watch the mesh")
    return listen
