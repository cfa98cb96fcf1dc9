"""The optional compiled per-message loop (mesh/_fastpath.pyx, Cython); everything else is in
pyproject.toml. When it cannot be built (no C compiler, no Cython), the install goes on
without it and the mesh runs its pure-Python loop (mesh/fastpath.py). It declares nothing of
libzmq and links nothing but Python: it calls pyzmq's own compiled socket methods at run time."""
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """A build failure of the extension is a warning, not a failed install."""

    def run(self):
        try:
            super().run()
        except Exception as e:  # noqa: BLE001 - any failure leaves the pure-Python path
            print(f"neuromesh: the compiled data path was not built ({e}); the pure-Python one runs",
                  file=sys.stderr)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001
            print(f"neuromesh: {ext.name} was not built ({e}); the pure-Python data path runs", file=sys.stderr)


def extensions():
    if os.environ.get("MESH_PURE_PYTHON", "") not in ("", "0"):
        return []
    try:
        from Cython.Build import cythonize
        return cythonize([Extension("mesh._fastpath", ["mesh/_fastpath.pyx"])], quiet=True)
    except Exception as e:  # noqa: BLE001
        print(f"neuromesh: the compiled data path is not built ({e}); the pure-Python one runs", file=sys.stderr)
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
