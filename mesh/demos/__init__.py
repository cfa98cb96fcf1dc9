"""The original's experiments, rerun on a local mesh: each trains on a
training split and reports held-out results beside the original's outcome."""
import time

from . import digits, random_bases, shots, simple, skip, words

DEMOS = {"simple": simple, "random": random_bases, "words": words, "shots": shots, "digits": digits, "skip": skip}


def run(name, client, quick=False, data=None, log=print):
    """Run one demo; returns its result row: name, result, original, seconds."""
    module = DEMOS[name]
    t = time.monotonic()
    result = module.run(client, quick=quick, data=data, log=log)
    return {"demo": name, **result, "original": module.ORIGINAL, "seconds": time.monotonic() - t}
