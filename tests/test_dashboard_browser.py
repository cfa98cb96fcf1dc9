"""The dashboard in a real browser: Debian's chromium, headless, driven by
Playwright (never a browser it downloads). Every wait is on the page's DOM
with a deadline; skipped, with the reason, where chromium cannot run."""
import os
import signal
import shutil

import numpy as np
import pytest

from conftest import Harness

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # no internet here: nothing may try to reach it
DEADLINE_MS = 60_000
NODES = ".node[data-gid]"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no chromium at {CHROMIUM} (.ci/run installs it as root: apt-get install chromium)")
    scratch = tmp_path_factory.mktemp("browser")
    tmpdir = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(scratch)  # the driver's and chromium's own temporary files: not in /tmp
    pw = sync_api.sync_playwright().start()
    try:
        context = pw.chromium.launch_persistent_context(str(scratch / "profile"), executable_path=CHROMIUM,
                                                        headless=True, args=FLAGS,
                                                        viewport={"width": 1280, "height": 1000})
    except Exception as e:
        pw.stop()
        pytest.skip(f"chromium at {CHROMIUM} could not start: {str(e).splitlines()[0]}")
    finally:
        if tmpdir is None:
            os.environ.pop("TMPDIR")
        else:
            os.environ["TMPDIR"] = tmpdir
    yield context
    context.close()
    pw.stop()


@pytest.fixture
def page(browser):
    p = browser.new_page()
    errors = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    p.close()
    assert not errors, f"the page raised: {errors}"


@pytest.fixture(scope="module")
def watched():
    h = Harness(2, timeout=30, dashboard="127.0.0.1:0")
    yield h
    h.stop()


def node(page, gid, attr):
    return page.get_attribute(f'.node[data-gid="{gid}"]', f"data-{attr}")


def test_the_page_shows_every_process_of_a_live_mesh(watched, page):
    net = watched.remember(watched.client.create([5, 5, 1], group_size=1, seed=7))
    net.predict([0.0, 1.0])  # layer 1 learns its width: the network is whole
    procs = {p["gid"]: p for p in net.processes()}
    page.goto(watched.mesh.dashboard_url)
    page.wait_for_function("n => document.querySelectorAll('.node[data-gid][data-state=alive]').length === n",
                           arg=len(procs), timeout=DEADLINE_MS)
    assert page.locator(NODES).count() == len(procs) == 11
    for gid, p in procs.items():
        assert node(page, gid, "pid") == str(p["pid"])
        assert node(page, gid, "layer") == str(p["layer"])
    assert page.locator("#link").get_attribute("data-live") == "true"
    assert page.locator("#workers tbody tr").count() == 2


def test_a_killed_group_turns_dead_then_alive_with_a_new_pid(watched, page):
    net = watched.remember(watched.client.create([4, 1], seed=3))
    net.predict([0.5, 0.5])
    (victim,) = [p for p in net.processes() if p["layer"] == 1]
    gid, old = victim["gid"], str(victim["pid"])
    page.goto(watched.mesh.dashboard_url)
    page.wait_for_function("([gid, pid]) => { const n = document.querySelector(`.node[data-gid='${gid}']`);"
                           " return n && n.dataset.pid === pid && n.dataset.state === 'alive'; }",
                           arg=[gid, old], timeout=DEADLINE_MS)
    # every state the node passes through, however briefly: the broker may rebuild it within one frame
    page.evaluate("""gid => {
        window.seen = [];
        const n = document.querySelector(`.node[data-gid='${gid}']`);
        new MutationObserver(() => seen.push([n.dataset.state, n.dataset.pid]))
            .observe(n, {attributes: true, attributeFilter: ['data-state', 'data-pid']});
    }""", gid)
    os.kill(victim["pid"], signal.SIGKILL)
    page.wait_for_function("([gid, pid]) => { const n = document.querySelector(`.node[data-gid='${gid}']`);"
                           " return n.dataset.state === 'alive' && n.dataset.pid !== pid && n.dataset.pid !== ''; }",
                           arg=[gid, old], timeout=DEADLINE_MS)
    seen = page.evaluate("window.seen")
    assert ["dead", old] in seen, seen
    new = node(page, gid, "pid")
    assert new == str({p["gid"]: p["pid"] for p in watched.remember(net).processes()}[gid])
    assert net.predict([0.5, 0.5]).shape == (1,)


def test_a_training_run_draws_its_loss_and_marks_its_restart(fresh_mesh, page, tmp_path):
    h = fresh_mesh(2, dashboard="127.0.0.1:0", faults_plan="n1.2.0@step=5", faults_log=tmp_path / "faults.log")
    net = h.remember(h.client.create([6, 2], seed=1))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3))
    Y = np.eye(2)[(X[:, 0] > 0).astype(int)]
    history = net.train(X, Y, epochs=2, batch_size=8, learning_rate=0.5, progress=False)
    assert [f.split(" pid")[0] for f in h.fired()] == ["n1.2.0@step=5 after step 5"]
    page.goto(h.mesh.dashboard_url)
    page.wait_for_function("() => { const l = document.querySelector('.loss-chart polyline.raw');"
                           " return l && Number(l.dataset.points) === 16; }", timeout=DEADLINE_MS)
    assert page.locator(".epoch-chart circle").count() == len(history) == 2
    assert page.locator(".loss-chart line.mark").count() == 1  # the restart, where it happened
    assert "state done" in page.inner_text(".training .stats")


def test_the_page_draws_every_edge_of_a_graph(watched, page):
    """Layer 3 reads layers 2 and 1 and the rows: 6 + 4 links between neighbours, 6 bowed over
    layer 2, and the rows' 2 from the margin, one per group pair."""
    net = watched.remember(watched.client.create([3, 2, 2], group_size=1, seed=7, inputs={3: [2, 1, 0]}))
    net.predict([0.0, 1.0])
    page.goto(watched.mesh.dashboard_url)
    box = f'.mesh[data-net="{net.id}"]'
    page.wait_for_function("s => document.querySelectorAll(s).length === 7",
                           arg=f"{box} .node[data-gid][data-state=alive]", timeout=DEADLINE_MS)
    count = lambda sel: page.locator(f"{box} .edges {sel}").count()  # noqa: E731
    assert count(".edge") == 18
    assert count('.edge[data-from="1"][data-to="2"]') == 6 and count('.edge[data-from="2"][data-to="3"]') == 4
    assert count('.edge.skip[data-from="1"][data-to="3"]') == 6
    assert count('.edge.rows[data-to="3"]') == 2
    net.drop()
