"""Networks bigger than the broker: it holds no weights, so its memory stays
flat while a network ten times its size is created, trains, loses a group
and is rebuilt from the groups' own snapshots and their keepers' replicas."""
import threading

import numpy as np

from mesh.procstat import rss_bytes

SIZES = [3200, 3200, 3200, 10]  # float64, adam: ~0.5 GB of weights and optimizer state


def state_bytes(sizes, inputs, slots=2, itemsize=8):
    """Weights, biases and optimizer slots of a network."""
    widths = [inputs] + sizes[:-1]
    params = sum(n * (w + 1) for n, w in zip(sizes, widths))
    return params * (1 + slots) * itemsize


class Sampler:
    """The broker's resident memory, read every 20 ms while a block runs: the peak is what
    counts, whenever it came (the reading bounds nothing; the test's events do)."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, 0, threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self):
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes(self.pid))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def test_the_broker_holds_no_weights_while_a_network_ten_times_its_size_trains_and_heals(fresh_mesh, tmp_path):
    h = fresh_mesh(workers=2, timeout=120, faults_plan="n1.2.0@step=6", faults_log=tmp_path / "faults.log")
    broker = h.client.status()["broker"]["pid"]
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(96, 64)), np.eye(10)[rng.integers(0, 10, 96)]
    before = rss_bytes(broker)
    with Sampler(broker) as during:
        net = h.remember(h.client.create(SIZES, seed=1, dtype="float64", activation="tanh", output="softmax",
                                         loss="cross_entropy"))
        net.predict(X[:1], remember=False)
        history = net.train(X, Y, epochs=4, batch_size=32, learning_rate=1e-3, optimizer="adam", shuffle=False,
                            progress=False)
    size = state_bytes(SIZES, X.shape[1])
    assert size > 10 * before, (size, before)  # the network is ten times the broker
    assert len(h.fired()) == 1  # a group died at step 6 of 12 and was rebuilt from the replica its keeper held
    assert [n["restarts"] for n in h.client.status()["networks"]] == [1]
    assert len(history) == 4 and np.all(np.isfinite(history))
    grew = during.peak - before
    print(f"broker {before / 2**20:.0f} MiB, grew {grew / 2**20:.1f} MiB; network {size / 2**20:.0f} MiB")
    assert grew < 0.05 * size, f"the broker grew by {grew / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB network"
    assert set(net.steps().values()) == {12}
