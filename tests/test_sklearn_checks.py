"""scikit-learn's own conformance suite over both estimators, on the process's one shared mesh."""
import pytest

pytest.importorskip("sklearn")
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from mesh import shared  # noqa: E402
from mesh.estimator import MeshClassifier, MeshRegressor  # noqa: E402

# Small enough that each of the ~100 fits takes a fraction of a second, big enough that the
# checks' accuracy bars are cleared.
SMALL = dict(hidden_layer_sizes=(16,), max_iter=60, learning_rate_init=0.01)

# Every check passes: none is expected to fail (at most 3 may be, each naming a documented feature).
EXPECTED = {}
# Each check is bounded against a hang; all ~108 of them took 17 s here (2 shared cores).
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", autouse=True)
def one_shared_mesh():
    """The checks fit their clones on the shared mesh; it is ended once they are done."""
    yield
    shared.stop()


@parametrize_with_checks([MeshClassifier(**SMALL), MeshRegressor(**SMALL)], expected_failed_checks=lambda est: EXPECTED)
def test_scikit_learn_conformance(estimator, check):
    check(estimator)
