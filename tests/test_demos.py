"""Each of the original's experiments, in its reduced mode. The full-size
results are in docs/benchmarks.md, produced by `mesh demo all`."""
import pytest

from mesh.demos import run
from mesh.demos.shots import WHERE, find


def test_simple(mesh2):
    assert run("simple", mesh2.client, quick=True, log=lambda *a: None)["accuracy"] == 1.0


def test_random(mesh2):
    assert run("random", mesh2.client, quick=True, log=lambda *a: None)["accuracy"] >= 0.95


def test_words(mesh2):
    """Chance is 0.5. On its 160 held-out words (one word: 0.6%) the quick run scored 0.8875-0.900 over
    random_state 0-5, the order of the rows it is shuffled in deciding which: a bar at 0.9 was luck."""
    assert run("words", mesh2.client, quick=True, log=lambda *a: None)["accuracy"] >= 0.85


def test_digits(mesh2):
    pytest.importorskip("sklearn")
    assert run("digits", mesh2.client, quick=True, log=lambda *a: None)["accuracy"] >= 0.9


def test_shots(mesh2):
    if find() is None:
        pytest.skip(f"nba_shots_2015_16.csv is absent: it is {WHERE}")
    r = run("shots", mesh2.client, quick=True, log=lambda *a: None)
    assert r["accuracy"] > 0.55  # above the base rate, on a fifth of the data and 8 epochs


def test_demo_command_without_shots_data_says_where_to_get_it(tmp_path):
    import os
    import subprocess
    import sys
    env = {**os.environ, "MESH_SHOTS_DATA": str(tmp_path / "missing.csv")}
    r = subprocess.run([sys.executable, "-m", "mesh", "demo", "shots", "--quick", "--workers", "1",
                        "--data", str(tmp_path / "missing.csv")], capture_output=True, text=True, timeout=120,
                       env=env, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert "DomSamangy/NBA_Shots_04_24" in r.stdout and "skipped" in r.stdout


def test_skip_reports_the_chain_and_the_wide_and_deep_network_on_one_split(mesh2):
    r = run("skip", mesh2.client, quick=True, log=lambda *a: None)
    assert r["chain"] >= 0.8 and r["accuracy"] >= 0.8  # both learn the task; which is ahead is what it reports
    assert r["result"].startswith(f"words: chain {r['chain']:.1%}, wide & deep {r['accuracy']:.1%}")
    assert ("shots chain" in r) == (find() is not None)  # the shots part only where its data is
