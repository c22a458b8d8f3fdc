"""End-to-end: tutorial 01 in a real JupyterLab, driven by Chromium via Playwright.

Starts ``jupyter lab`` on a free port with a random token in a temporary copy
of ``notebooks/``, opens ``01_quickstart.ipynb``, runs all cells, clicks the
live ``increment`` button and checks the bound ``count`` control changes.
A screenshot goes to ``test-artifacts/browser-01.png``. Every process it
starts is stopped in ``finally`` blocks.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = "01_quickstart.ipynb"
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright (python) is not installed"
)
if not CHROMIUM.exists():  # pragma: no cover - depends on the machine
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)",
                allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"jupyter lab did not answer at {url} within {timeout}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _count_value(page: object) -> str:
    # the IntText bound to ``count`` (the first one: %%pattern's own widgets)
    loc = page.locator(".widget-inline-hbox:has(label:text-is('count')) input").first  # type: ignore[attr-defined]
    return str(loc.input_value())


def test_quickstart_increment_in_jupyterlab(tmp_path: Path) -> None:
    workdir = tmp_path / "notebooks"
    workdir.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, workdir / NOTEBOOK)
    ARTIFACTS.mkdir(exist_ok=True)
    token = secrets.token_hex(16)
    port = _free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"))
    log = (tmp_path / "lab.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser",
         f"--IdentityProvider.token={token}", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         "--ServerApp.port_retries=0", f"--ServerApp.root_dir={workdir}",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])],
        cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(f"{base}/api/status?token={token}", server)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=str(CHROMIUM),
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync", "--no-first-run"],
            )
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(60_000)
                page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}&reset")
                page.wait_for_selector(".jp-Notebook .jp-Cell")
                # the kernel must be idle before Run All
                page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=90_000)
                page.locator(".jp-Notebook").first.click()
                page.keyboard.press("Escape")
                page.locator(".lm-MenuBar-itemLabel:text-is('Run')").first.click()
                page.locator(".lm-Menu-itemLabel:text-is('Run All Cells')").first.click()
                button = page.locator("button.jupyter-button:has-text('increment')").first
                button.wait_for(state="visible", timeout=90_000)
                page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=90_000)
                # after Run All the live count is 10 (tutorial 01 sets it last)
                page.wait_for_function(
                    """() => [...document.querySelectorAll('.widget-inline-hbox')]
                        .some(b => b.querySelector('label')?.textContent === 'count'
                                && b.querySelector('input')?.value === '10')""",
                    timeout=60_000,
                )
                before = _count_value(page)
                button.scroll_into_view_if_needed()
                button.click()
                page.wait_for_function(
                    """(before) => [...document.querySelectorAll('.widget-inline-hbox')]
                        .some(b => b.querySelector('label')?.textContent === 'count'
                                && b.querySelector('input')?.value === String(before + 1))""",
                    arg=int(before), timeout=30_000,
                )
                after = _count_value(page)
                page.screenshot(path=str(ARTIFACTS / "browser-01.png"), full_page=False)
                assert (int(before), int(after)) == (10, 11)
            finally:
                browser.close()
    except Exception:
        log.flush()
        sys.stderr.write((tmp_path / "lab.log").read_text(errors="replace")[-4000:])
        raise
    finally:
        _stop(server)
        log.close()
