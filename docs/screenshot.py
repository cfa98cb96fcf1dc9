"""Make docs/dashboard.png: the dashboard in headless chromium during a
training run with one group killed. Run from the checkout: python docs/screenshot.py"""
import os
import threading
from pathlib import Path

import numpy as np
from playwright.sync_api import sync_playwright

from mesh import faults
from mesh.localmesh import LocalMesh

HERE = Path(__file__).resolve().parent
SCRATCH = HERE.parent / ".pytest-tmp" / "screenshot"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def main():
    SCRATCH.mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = str(SCRATCH)
    env = {faults.ENV: "n1.2.1@step=300", faults.LOG_ENV: str(SCRATCH / "faults.log")}
    mesh = LocalMesh(2, dashboard="127.0.0.1:0", env=env)
    client = mesh.start()
    try:
        net = client.create([12, 8, 3], group_size=2, seed=1, activation="tanh", output="softmax",
                            loss="cross_entropy")
        rng = np.random.default_rng(0)
        X = rng.normal(size=(2048, 8))
        Y = np.eye(3)[(X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)]
        training = threading.Thread(target=net.train, args=(X, Y), daemon=True,
                                    kwargs=dict(epochs=12, batch_size=32, learning_rate=0.05, progress=False))
        training.start()
        with sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(str(SCRATCH / "profile"), executable_path="/usr/bin/chromium",
                                                            headless=True, args=FLAGS,
                                                            viewport={"width": 1100, "height": 900})
            page = browser.new_page()
            page.goto(mesh.dashboard_url)
            page.wait_for_function("() => document.querySelectorAll('.loss-chart line.mark').length > 0 && "
                                   "Number(document.querySelector('.loss-chart polyline.raw').dataset.points) > 500",
                                   timeout=120_000)
            page.screenshot(path=str(HERE / "dashboard.png"), full_page=True)
            browser.close()
        training.join(120)
    finally:
        mesh.stop()


if __name__ == "__main__":
    main()
