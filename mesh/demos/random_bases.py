"""random: two fixed base vectors of 10 U(0,1) values; each sample is a base
plus U(0,1) noise; the label says which base. Trained in mini-batches on a
training split, scored on held-out samples."""
import numpy as np

ORIGINAL = "96.5% (measured)"


def make(n, seed=0):
    rng = np.random.default_rng(seed)
    bases = rng.uniform(size=(2, 10))
    y = rng.integers(0, 2, size=n)
    X = bases[y] + rng.uniform(size=(n, 10))
    return X, y


def run(client, quick=False, data=None, log=print):
    X, y = make(2000 if quick else 20000)
    cut = int(0.8 * len(X))
    net = client.create([16, 2], output="softmax", loss="cross_entropy", activation="tanh", seed=1)
    try:
        Y = np.eye(2)[y]
        hist = net.train(X[:cut], Y[:cut], epochs=5 if quick else 20, batch_size=32, learning_rate=0.01,
                         optimizer="adam", seed=0, progress=False)
        log(f"  loss by epoch: {' '.join(f'{h:.3f}' for h in hist[::max(1, len(hist) // 5)])}")
        pred = net.predict(X[cut:], remember=False).argmax(axis=1)
        acc = float(np.mean(pred == y[cut:]))
        return {"result": f"{acc:.1%} held-out accuracy", "accuracy": acc}
    finally:
        net.drop()
