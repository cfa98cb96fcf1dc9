"""The brokers a worker or a client may talk to: one address, or a pair
("tcp://A:5555,tcp://B:5555", in any order). It talks to one at a time and
moves to the next when that one goes silent or says it is the standby."""


def parse(addresses):
    """The list of broker addresses in a comma-separated string; ValueError when empty or more than two."""
    found = [a.strip() for a in str(addresses).split(",") if a.strip()]
    if not 1 <= len(found) <= 2:
        raise ValueError(f"give one broker address, or the two of a pair separated by a comma; got {addresses!r}")
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
