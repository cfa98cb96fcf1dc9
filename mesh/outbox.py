"""What a group sends: the records its state returns (groupstate.py), one per message or
socket change, in order; its process (group.py) sends them. `to` names a peer by its
endpoint, as the last Rewire dialled it."""
from typing import NamedTuple

BROKER = None  # the `to` of a data message for the broker's inbox


class Send(NamedTuple):
    """A control message to a peer group (`to`: its endpoint, wired by the last Rewire)."""
    to: str
    header: dict
    arrays: tuple = ()


class ToBroker(NamedTuple):
    """A control message to the broker (its header carries the network, group and generation)."""
    header: dict
    arrays: tuple = ()


class Onward(NamedTuple):
    """Built data messages, [(to, bytes)], `to` a peer's endpoint or BROKER, of pass d (its
    Data header: a send that fails is refused in its name). lease: d is a client's pass, sent
    without blocking; a peer that takes nothing gets the client a STALE instead
    (datapath.stale), and the sends end there."""
    sends: list
    d: object = None
    lease: bool = False


class Answer(NamedTuple):
    """Frames to a client's reply address (a pass under a lease); never blocks."""
    to: str
    frames: list


class Rewire(NamedTuple):
    """Close every peer socket; dial these, {endpoint: server key or None}."""
    peers: dict


class Rebroker(NamedTuple):
    """Report to another broker from now on (a failover): its tcp address, its unix socket,
    and whether it is on this host."""
    tcp: str
    ipc: object
    same_host: bool
