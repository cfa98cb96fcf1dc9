"""Memory sizes as people write them: `1.5GiB`, `800MiB`, `2GB`, `1000` (bytes).
No numpy here: the command line parses `--memory` before numpy may load."""
import re

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3, "tb": 1000 ** 4,
         "kib": KiB, "mib": MiB, "gib": GiB, "tib": 1 << 40}
SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")


def parse_size(text):
    """Bytes from `1.5GiB`, `800MiB`, `2GB`, `512KiB` or plain bytes; ValueError naming the text otherwise."""
    m = SIZE.fullmatch(str(text))
    unit = m and m.group(2).lower()
    if not m or unit not in UNITS:
        raise ValueError(f"invalid memory size {text!r}: use bytes or a number with KiB, MiB, GiB, KB, MB or GB "
                         f"(e.g. 1.5GiB)")
    n = int(float(m.group(1)) * UNITS[unit])
    if n <= 0:
        raise ValueError(f"invalid memory size {text!r}: it must be more than 0 bytes")
    return n


def unit_of(n):
    """(name, bytes) of the unit n is best written in."""
    return next(((u, size) for u, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)) if n >= size), ("B", 1))


def format_size(n):
    """1.5 GiB, 800 MiB, 12 KiB: three significant digits at most."""
    unit, size = unit_of(n)
    return f"{n / size:.3g} {unit}"
