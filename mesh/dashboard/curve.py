"""A loss curve of bounded size for a run of any length."""
import math

LIMIT = 1024  # points kept (and sent a few times a second); the page draws each


class Curve:
    """Loss per step. When LIMIT points are full, neighbours merge in pairs
    (their mean) and each point from then on covers twice as many steps: the
    whole run stays in view, at an ever coarser grain."""

    def __init__(self, limit=LIMIT):
        self.limit, self.width = limit, 1
        self.points = []              # [last step of the point, mean loss]
        self.sum, self.count = 0.0, 0  # steps of the point being filled

    def add(self, step, loss):
        if not math.isfinite(loss):
            return  # a diverged step says so in the samples' loss, not as a point no chart can place
        self.sum += loss
        self.count += 1
        if self.count < self.width:
            self.open_step = step
            return
        self.points.append([step, round(self.sum / self.count, 6)])
        self.sum, self.count = 0.0, 0
        if len(self.points) >= self.limit:
            pairs = zip(self.points[0::2], self.points[1::2])
            self.points = [[b[0], round((a[1] + b[1]) / 2, 6)] for a, b in pairs]
            self.width *= 2

    def view(self):
        """The points, with the one being filled, as plain lists."""
        if self.count:
            return self.points + [[self.open_step, round(self.sum / self.count, 6)]]
        return list(self.points)
