"""Step ids that finish out of order, summed up by one number: every id up to
`done` has finished. The broker counts the steps it has sent, each group the
steps it has applied (groupstate.py, "Ordering")."""


class Watermark:
    def __init__(self, done=0):
        self.done = done
        self.ahead = set()  # ids finished beyond `done` (two clients' steps may finish out of order)

    def mark(self, step):
        if step > self.done:
            self.ahead.add(step)
        while self.done + 1 in self.ahead:
            self.done += 1
            self.ahead.discard(self.done)
