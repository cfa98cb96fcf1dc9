"""The client API: talks only to the broker.

    client = mesh.Client("tcp://127.0.0.1:5555")
    net = client.create([5, 5, 1], group_size=1, seed=7)
    net.predict([0.0, 1.0]); net.backprop([1.0], learning_rate=0.5)

Every call has a timeout; a broker refusal is raised as RemoteError with the
broker's message, silence as MeshTimeout naming what did not answer. The
connection (request matching, waiting, a pair's failover) is connection.py;
a network's handle is handle.py."""
from . import direct, wire
from .checkpoint import read
from .connection import DEFAULT_TIMEOUT, Connection
from .errors import BrokerExited, Cancelled, MeshTimeout, RemoteError
from .handle import Network
from .spec import Spec

__all__ = ["Client", "Network", "RemoteError", "MeshTimeout", "BrokerExited", "Cancelled"]

STEPS = {wire.BACKPROP, wire.TRAIN, wire.SET_WEIGHTS}  # requests that change a network's weights


class Client(Connection):
    def __init__(self, address="tcp://127.0.0.1:5555", timeout=DEFAULT_TIMEOUT, keys=None, direct_predicts=True):
        """address: the broker's, or a pair's two separated by a comma (the client follows the
        active one). keys: a keys folder (see mesh.security); default MESH_KEYS, if set.
        direct_predicts: predict(remember=False) skips the broker when the broker leases
        the way (direct.py); False: every predict goes through the broker."""
        super().__init__(address, timeout, keys)
        local = direct_predicts and self.keys is None and direct.usable(self.brokers.all)
        self.direct = direct.Direct(self.ctx, self._route, min(direct.PATIENCE, self.timeout)) if local else None

    def __deepcopy__(self, memo):
        """A connection is shared, not copied: clone() of an estimator given this client uses it too."""
        return self

    def send(self, op, arrays=(), timeout=None, patience=None, **fields):
        """As Connection.send; a request that changes a network's weights also ends this client's
        lease on it, so that its later predicts see the change (direct.py)."""
        rid = super().send(op, arrays, timeout, patience, **fields)
        if self.direct is not None and op in STEPS:
            self.direct.forget(fields.get("net"))
        return rid

    def _route(self, net):
        """A lease for predicts that skip the broker (direct.py), or None if it refuses one."""
        try:
            return self.request(wire.ROUTE, net=net)[0]
        except RemoteError:
            return None

    def create(self, sizes, group_size=None, seed=0, activation="sigmoid", output="sigmoid", loss="mse",
               dtype="float32", placement=None, timeout=None, init="auto", optimizer=None, inputs=None):
        """Start a network of `sizes` (hidden layers then outputs); the input width comes from the data.
        placement: {layer number (1 = first hidden): host address or worker name} pins layers.
        init: "auto" or "glorot" (scikit-learn's; see spec.initial_layer).
        group_size: None (a process per layer, cut only as memory budgets require), K neurons, or
        "balanced" (about the same work in every process).
        optimizer: what to plan memory for on workers with budgets (default adam, the most any
        training keeps; a training run with more re-checks the budgets).
        inputs: {layer: [sources]}, what a layer reads (0: the rows), concatenated in that order,
        e.g. {2: [1, 0], 3: [2, 1, 0]}; a layer not named reads the one before it."""
        spec = Spec(list(sizes) if not isinstance(sizes, int) else [sizes], activation, output, loss, dtype,
                    group_size, seed, init, inputs)
        h, _ = self.request(wire.CREATE, spec=spec.to_dict(), placement=placement or {}, timeout=timeout,
                            optimizer=optimizer)
        return Network(self, h["net"], spec)

    def network(self, net_id):
        """A handle on a network that already runs (made by another client, say); its
        status record (sizes, inputs, output, loss, target...) is in .info."""
        for n in self.status()["networks"]:
            if n["net"] == net_id:
                net = Network(self, net_id, None)
                net.info = n
                return net
        raise RemoteError(f"unknown network {net_id!r}")

    def status(self):
        """Of the active broker (a pair's client); of the one broker asked, standby or not, otherwise."""
        h, _ = self.request(wire.STATUS, pair=self.brokers.pair)
        return {k: h[k] for k in ("broker", "workers", "networks")}

    def load(self, path, timeout=None):
        """Start a network from a file written by Network.save."""
        return self.load_state(*read(path), timeout=timeout)

    def load_state(self, meta, arrays, timeout=None):
        """Start a network from Network.state()'s plain data."""
        h, _ = self.request(wire.LOAD, arrays, spec=meta["spec"], encoder=meta["encoder"],
                            optimizer=meta["optimizer"], timeout=timeout)
        return Network(self, h["net"], Spec(**meta["spec"]))
