"""The package's top level, as a user first meets it."""
import subprocess
import sys

import mesh
from conftest import all_gone


def test_local_works_again_after_first_use():
    """mesh/local.py once replaced the function `mesh.local` after its first import."""
    for _ in range(2):
        local = mesh.local(workers=1)
        with local as client:
            pids = local.pids()
            assert len(client.status()["workers"]) == 1
        assert all_gone(pids)


def test_estimators_and_version_at_top_level():
    from mesh.estimator import MeshClassifier, MeshRegressor
    assert mesh.MeshClassifier is MeshClassifier and mesh.MeshRegressor is MeshRegressor
    assert mesh.__version__.count(".") == 2
    r = subprocess.run([sys.executable, "-m", "mesh", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"mesh {mesh.__version__}"
