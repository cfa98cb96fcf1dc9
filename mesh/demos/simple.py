"""simple: [0, 1] -> 1 and [1, 0] -> 0, learned online one row at a time
(predict, then backprop) by a neuron-per-process [5, 5, 1] sigmoid mesh,
as the original did."""
import numpy as np

ORIGINAL = "learned (squared error falls to ~0)"


def run(client, quick=False, data=None, log=print):
    net = client.create([5, 5, 1], group_size=1, seed=7)
    try:
        rows, targets = [[0.0, 1.0], [1.0, 0.0]], [1.0, 0.0]
        steps = 200 if quick else 600
        for i in range(steps):
            j = i % 2
            net.predict(rows[j])
            err = net.backprop([targets[j]], learning_rate=2.0)
            if (i + 1) % (steps // 5) == 0:
                log(f"  step {i + 1}: squared error {2 * err:.4f}")
        out = net.predict(rows, remember=False)[:, 0]
        log(f"  [0,1] -> {out[0]:.3f}   [1,0] -> {out[1]:.3f}   ({len(net.processes())} neuron processes)")
        acc = float(np.mean((out > 0.5) == np.array(targets, bool)))
        return {"result": f"{acc:.0%} correct", "accuracy": acc}
    finally:
        net.drop()
