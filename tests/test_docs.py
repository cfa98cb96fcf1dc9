"""The docs say what is true: every ```python and ```sh block of README.md and docs/ runs as
written, and the site builds with `mkdocs build --strict` (no broken link, no missing page).

Blocks that are not meant to run alone use other fences (```py, ```console, ```text)."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(python|sh)\n(.*?)^```", flags=re.S | re.M)
BLOCKS = [(page, lang, code) for page in PAGES for lang, code in FENCE.findall(page.read_text())]
IDS = [f"{p.relative_to(ROOT)}:{lang}{i + 1}" for i, (p, lang, _) in enumerate(BLOCKS)]
SETUP = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest -q"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_block(argv, cwd, env, timeout):
    """In a session of its own, so that whatever it starts is ended with it, by its process
    group, even when it hangs past the timeout."""
    p = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail(f"timed out after {timeout}s\n{out[-2000:]}\n{err[-3000:]}")
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # anything of its session still running
        except ProcessLookupError:
            pass
    return p.returncode, out, err


def test_the_docs_have_blocks_to_run():
    langs = {lang for _, lang, _ in BLOCKS}
    assert langs == {"python", "sh"} and len(BLOCKS) >= 8
    assert any(p.name == "README.md" for p, _, _ in BLOCKS)


def test_the_readme_gives_the_two_commands_unrun():
    """The set-up lines create virtualenvs, so they sit in a block the tests do not run; .ci/run
    runs the second exactly as the README writes it."""
    text = (ROOT / "README.md").read_text()
    assert "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/mesh demo" in text
    assert SETUP in text and SETUP in (ROOT / ".ci" / "run").read_text()
    assert all(SETUP not in code for _, _, code in BLOCKS)
    assert len(text.encode()) <= 10 * 1024



def test_the_environment_variables_listed_are_those_read():
    """The command line page's table of variables names every one settings.py reads, and no other."""
    from mesh import settings
    read = {value for name, value in vars(settings).items() if name.isupper()}
    page = (ROOT / "docs" / "guide" / "cli.md").read_text()
    table = page.split("## Environment variables")[1].split("\n## ")[0]
    listed = {name for row in table.splitlines() if row.startswith("| `")
              for name in re.findall(r"`([A-Z_]+)`", row.split("|")[1])}
    assert listed == read, f"listed, not read: {listed - read}; read, not listed: {read - listed}"

@pytest.mark.timeout(300)
@pytest.mark.parametrize("page,lang,code", BLOCKS, ids=IDS)
def test_block_runs_as_written(page, lang, code, tmp_path):
    """python blocks in a fresh interpreter, sh blocks in bash -e with the package's `mesh` on
    the PATH. A `mesh up` in a block listens where MESH_UP_BIND says (a free port, not 5555,
    which another run may hold) and other commands find it through MESH_BROKER; its dashboard
    takes any free port."""
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MESH_UP_BIND": f"tcp://127.0.0.1:{port}", "MESH_BROKER": f"tcp://127.0.0.1:{port}",
           "MESH_UP_DASHBOARD": "127.0.0.1:0", "MESH_DIE_WITH_PARENT": "1"}
    argv = [sys.executable, "-c", code] if lang == "python" else ["bash", "-e", "-c", code]
    code_, out, err = run_block(argv, tmp_path, env, timeout=240)
    assert code_ == 0, f"{out[-2000:]}\n{err[-3000:]}"


@pytest.mark.timeout(300)
def test_the_site_builds_strict(tmp_path):
    mkdocs = pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]')")
    assert mkdocs
    exe = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or "mkdocs"
    r = subprocess.run([exe, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                       capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
                       env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stderr[-4000:]
    assert (tmp_path / "site" / "guide" / "python" / "index.html").exists()
    assert "14.9" in (tmp_path / "site" / "index.html").read_text()  # the original's figure, introduced
