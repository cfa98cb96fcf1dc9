"""neuromesh: a feed-forward neural network run as a mesh of OS processes
talking ZeroMQ. Every neuron group is its own process; activations and
gradients stream from group to group.

    import mesh
    with mesh.local(workers=2) as client:
        net = client.create([5, 5, 1], group_size=1, seed=7)
        net.predict([0.0, 1.0])
"""
__version__ = "0.2.0"  # the one place the version is written (pyproject.toml reads it)

# Names load lazily: `mesh worker` must bound BLAS threads before numpy loads. No submodule
# may share an exported name: importing it would replace the export on the package.
_EXPORTS = {"Client": "client", "Network": "client", "RemoteError": "client", "MeshTimeout": "client",
            "BrokerExited": "client", "Cancelled": "client",
            "local": "localmesh", "LocalMesh": "localmesh", "ReferenceNet": "reference", "Spec": "spec",
            "MeshClassifier": "estimator", "MeshRegressor": "estimator"}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'mesh' has no attribute {name!r}")
