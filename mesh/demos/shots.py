"""shots: every NBA shot of the 2015-16 regular season. Features: the shooter
(a factor) and the shot's position re-expressed around the basket (distance
and angle, the change that made the original work). Split by game, 80/20;
made or missed, scored by accuracy and log-loss on the held-out games.

The data may not be republished, so it is read from where it lies."""
import csv
from pathlib import Path

import numpy as np

from .. import settings
from ..estimator import MeshClassifier

ORIGINAL = "barely above chance (54.8% base rate)"
FILE = "nba_shots_2015_16.csv"
WHERE = ("the column projection of NBA_2016_Shots.csv from the GitHub repository DomSamangy/NBA_Shots_04_24 "
         "(see ../shared/data/README.md); pass --data PATH or set MESH_SHOTS_DATA")


def find(data=None):
    """The data file: the path given (--data, else MESH_SHOTS_DATA), else shared/data beside the project."""
    given = data or settings.shots_data()
    if given:
        return Path(given) if Path(given).is_file() else None
    for c in (Path(__file__).resolve().parents[3] / "shared" / "data" / FILE,
              Path.cwd().parent / "shared" / "data" / FILE):
        if c.is_file():
            return c
    return None


def load(path):
    """(rows [shooter, distance, angle], made 0/1, game ids)."""
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        rows, made, games = [], [], []
        for rec in r:
            x, y = float(rec["LOC_X"]), float(rec["LOC_Y"]) - 5.25  # the hoop is at (0, 5.25)
            rows.append([rec["PLAYER_NAME"], float(np.hypot(x, y)), float(np.degrees(np.arctan2(x, y)))])
            made.append(rec["SHOT_MADE"] == "TRUE")
            games.append(rec["GAME_ID"])
    return rows, np.array(made, dtype=int), np.array(games)


def log_loss(y, p):
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def split(data=None, quick=False):
    """(training rows, their targets, held-out rows, their targets, held-out games), split by
    game; None when the file is absent."""
    path = find(data)
    if path is None:
        return None
    rows, y, games = load(path)
    uniq = np.unique(games)
    test_games = set(np.random.default_rng(0).choice(uniq, size=len(uniq) // 5, replace=False))
    test = np.array([g in test_games for g in games])
    train_idx, test_idx = np.flatnonzero(~test), np.flatnonzero(test)
    if quick:
        train_idx, test_idx = train_idx[:20000], test_idx[:5000]
    return [rows[i] for i in train_idx], y[train_idx], [rows[i] for i in test_idx], y[test_idx], len(test_games)


def fit_and_score(client, Xtr, ytr, Xte, yte, quick, inputs=None):
    """(accuracy, log-loss, epochs) of the demo's classifier on the held-out shots."""
    # 475 shooter columns overfit quickly: stop on a held-out tenth of the training games' shots
    clf = MeshClassifier(hidden=(32, 32), epochs=8 if quick else 60, batch_size=200, random_state=0,
                         early_stopping=True, n_iter_no_change=5, client=client, inputs=inputs)
    try:
        clf.fit(Xtr, ytr)
        p = clf.predict_proba(Xte)[:, list(clf.classes_).index(1)]
        return float(np.mean((p > 0.5) == yte)), log_loss(yte, p), clf.n_iter_
    finally:
        clf.close()


def run(client, quick=False, data=None, log=print):
    parts = split(data, quick)
    if parts is None:
        log(f"  {FILE} not found: it is {WHERE}. Skipped.")
        return {"result": "skipped (no data)", "accuracy": None}
    Xtr, ytr, Xte, yte, n_games = parts
    acc, ll, epochs = fit_and_score(client, Xtr, ytr, Xte, yte, quick)
    log(f"  {len(Xtr):,} training shots, {len(Xte):,} held-out shots from {n_games} games; "
        f"{epochs} epochs; base rate {1 - yte.mean():.1%} missed")
    return {"result": f"{acc:.1%} acc, log-loss {ll:.3f}", "accuracy": acc, "log_loss": ll}
