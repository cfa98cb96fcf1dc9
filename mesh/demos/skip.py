"""skip: where an edge past the hidden layers helps. The words demo's task (a
word's characters as factors, one per position, target = length mod 2) on the
same split, learnt by the plain chain and by a wide & deep network whose
output layer also reads the rows (inputs={2: [1, 0]}); then, when its data is
there, the shots demo's the same way (inputs={3: [2, 0]}).

Why it helps: a position past the word's end is absent, so the word's length
is how many positions are present, and its parity is an alternating sum of
those presences: linear in the rows. The wide part sees it directly; the chain
has to carry it through its hidden layer."""
from ..estimator import MeshClassifier
from . import shots
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
            log(f"  words, {name}: {scores[name]:.1%} on {len(ws) - cut} held-out words ({cut} to train, "
                f"{clf.n_iter_} epochs)")
        finally:
            clf.close()
    result = {"result": f"words: chain {scores['chain']:.1%}, wide & deep {scores['wide & deep']:.1%}",
              "accuracy": scores["wide & deep"], "chain": scores["chain"]}
    parts = shots.split(data, quick)
    if parts is None:
        log(f"  shots: {shots.FILE} not found ({shots.WHERE}); the words alone.")
        return result
    Xtr, ytr, Xte, yte, n_games = parts
    for name, inputs in (("chain", None), ("wide & deep", {3: [2, 0]})):
        acc, ll, epochs = shots.fit_and_score(client, Xtr, ytr, Xte, yte, quick, inputs)
        log(f"  shots, {name}: {acc:.1%} acc, log-loss {ll:.3f} on {len(Xte):,} held-out shots of {n_games} games "
            f"({epochs} epochs)")
        result[f"shots {name}"] = (acc, ll)
    result["result"] += "; shots: " + ", ".join(f"{name} {result[f'shots {name}'][0]:.1%}"
                                                 for name in ("chain", "wide & deep"))
    return result
