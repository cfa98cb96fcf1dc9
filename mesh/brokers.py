"""The brokers a worker or a client may talk to: one address, or a pair
("tcp://A:5555,tcp://B:5555", in any order). It talks to one at a time and
moves to the next when that one goes silent or says it is the standby."""
import re

# tcp://HOST:PORT, HOST a name, an IPv4 address or a [bracketed] IPv6 one; or a unix socket
ADDRESS = re.compile(r"tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})|ipc://.+")


def parse(addresses):
    """The list of broker addresses in a comma-separated string; ValueError when empty, more than
    two, or one is not tcp://HOST:PORT (or ipc://PATH)."""
    found = [a.strip() for a in str(addresses).split(",") if a.strip()]
    if not 1 <= len(found) <= 2:
        raise ValueError(f"give one broker address, or the two of a pair separated by a comma; got {addresses!r}")
    for a in found:
        m = ADDRESS.fullmatch(a)
        if m is None or (m.group(2) is not None and not 0 < int(m.group(2)) < 65536):
            raise ValueError(f"{a!r} is not a broker address: give tcp://HOST:PORT, e.g. tcp://127.0.0.1:5555")
    return found


class Brokers:
    def __init__(self, addresses):
        self.all = parse(addresses)
        self.at = 0

    @property
    def current(self):
        return self.all[self.at]

    @property
    def pair(self):
        return len(self.all) > 1

    def next(self):
        """Move to the other broker; True when that completes a round of the list."""
        self.at = (self.at + 1) % len(self.all)
        return self.at == 0

    def __str__(self):
        return ",".join(self.all)
