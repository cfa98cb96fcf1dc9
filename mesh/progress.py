"""A progress line for long work: tqdm when installed, else a plain line on
stderr. Off when stderr is not a terminal, unless asked for."""
import sys
import time


class Bar:
    def __init__(self, total, enabled=None, unit="rows"):
        self.enabled = sys.stderr.isatty() if enabled is None else bool(enabled)
        self.total, self.unit = total, unit
        self.tqdm = None
        if self.enabled:
            try:
                from tqdm import tqdm
                self.tqdm = tqdm(total=total, unit=unit, file=sys.stderr, leave=True)
            except ImportError:
                self.last = 0.0

    def update(self, done, note=""):
        if not self.enabled:
            return
        if self.tqdm is not None:
            self.tqdm.update(done - self.tqdm.n)
            self.tqdm.set_postfix_str(note, refresh=False)
            return
        now = time.monotonic()
        if now - self.last > 0.25 or done >= self.total:
            self.last = now
            pct = 100.0 * done / max(self.total, 1)
            sys.stderr.write(f"\r{pct:5.1f}% {done:,}/{self.total:,} {self.unit}  {note}\033[K")
            sys.stderr.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self.enabled:
            return
        if self.tqdm is not None:
            self.tqdm.close()
        else:
            sys.stderr.write("\n")


class RunProgress:
    """A training run's progress as the broker reports it: a Bar of its rows, and
    on_epoch(epoch, loss) once for each epoch that ended (epoch counts from 1)."""

    def __init__(self, total, enabled, on_epoch):
        self.bar, self.total, self.on_epoch, self.told = Bar(total, enabled, "rows"), total, on_epoch, 0

    def report(self, h):
        self.bar.update((h["epoch"] - 1) * h["total"] + h["rows"],
                        f"epoch {h['epoch']}/{h['epochs']} loss {h['loss']:.4g} {h['rate']:,.0f} rows/s")
        self.ended(h.get("history") or [])

    def finished(self, history):
        self.bar.update(self.total, f"loss {history[-1]:.4g}")
        self.ended(history)

    def ended(self, history):
        for loss in history[self.told:]:
            self.told += 1
            if self.on_epoch is not None:
                self.on_epoch(self.told, loss)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.__exit__(*exc)
