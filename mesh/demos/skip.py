"""skip: where an edge past the hidden layers helps. The words demo's task (a
word's characters as factors, one per position, target = length mod 2) on the
same split, learnt by the plain chain and by a wide & deep network whose
output layer also reads the rows (inputs={2: [1, 0]}).

Why it helps: a position past the word's end is absent, so the word's length
is how many positions are present, and its parity is an alternating sum of
those presences: linear in the rows. The wide part sees it directly; the chain
has to carry it through its hidden layer."""
from ..estimator import MeshClassifier
from .words import split

ORIGINAL = "the words demo's task; the original had no skips"
WIDE_AND_DEEP = {2: [1, 0]}  # the output layer reads the hidden layer and the rows


def run(client, quick=False, data=None, log=print):
    ws, X, y, cut = split(quick)  # the words demo's split
    scores = {}
    for name, inputs in (("chain", None), ("wide & deep", WIDE_AND_DEEP)):
        clf = MeshClassifier(hidden=(64,), epochs=20 if quick else 60, batch_size=32, learning_rate=3e-3,
                             random_state=0, client=client, inputs=inputs)
        try:
            clf.fit(X[:cut], y[:cut])
            scores[name] = clf.score(X[cut:], y[cut:])
            log(f"  {name}: {scores[name]:.1%} on {len(ws) - cut} held-out words ({cut} to train, {clf.n_iter_} epochs)")
        finally:
            clf.close()
    return {"result": f"chain {scores['chain']:.1%}, wide & deep {scores['wide & deep']:.1%}",
            "accuracy": scores["wide & deep"], "chain": scores["chain"]}
