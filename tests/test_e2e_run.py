"""``make run`` (``python -m devenv run``) end to end: embedded services, the simulator, web,
worker, a real browser.

Run by ``make e2e`` (which installs Chromium when it is missing); ``make test`` deselects it.
The browser is driven over the DevTools protocol, so the page runs in real time: lead changes
from the simulator's webhooks must appear in its table over the WebSocket.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from websockets.sync.client import ClientConnection, connect

from devenv.services import free_port
from tests.stack import ROOT, Output, until

pytestmark = pytest.mark.e2e

SCREENSHOT = Path("/tmp/kommo-sync-e2e.png")


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Output, int, float]]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KOMMO_", "DATABASE_URL", "REDIS_URL", "WS_TOKENS"))
    }
    port = free_port()
    env.update(
        PORT=str(port),
        WORKER_METRICS_PORT=str(free_port()),
        LOCAL_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
        LOCAL_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    env["PYTHONPATH"] = str(ROOT)  # the dev supervisor and the simulator are not installed
    argv = [sys.executable, "-m", "devenv", "run"]  # what `make run` runs
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    output = Output(proc)
    try:
        yield proc, output, port, started
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.wait()
        output.close(proc)


class DevTools:
    """The least of the Chrome DevTools protocol: commands on one page target."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws, self.ids = ws, itertools.count(1)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == ident:
                assert "error" not in msg, msg
                result: dict[str, Any] = msg["result"]
                return result

    def eval(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is not installed: run `make e2e`, which installs it"
    profile = tmp_path / "chromium"
    proc = subprocess.Popen(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--window-size=1400,1000",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        active = profile / "DevToolsActivePort"
        port = until(
            "Chromium's DevTools port",
            lambda: active.exists() and active.read_text().split("\n")[0],
            30,
        )
        with httpx.Client(trust_env=False) as http:
            pages = until(
                "a page target",
                lambda: [
                    t
                    for t in http.get(f"http://127.0.0.1:{port}/json/list").json()
                    if t["type"] == "page"
                ],
                30,
            )
        with connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
            yield DevTools(ws)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_make_run_shows_live_changes_and_stops_cleanly(
    dev: tuple[subprocess.Popen[bytes], Output, int, float],
    browser: DevTools,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    proc, output, port, started = dev
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, f"make run exited early:\n{output.tail()}"
        try:
            return httpx.get(f"{base}/readyz", timeout=1, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    until("/readyz to answer 200", ready, 60)
    time_to_ready = time.monotonic() - started
    banner = until("the banner", lambda: output.search(r"#token=(\S+)"), 10)
    token = banner.group(1)
    assert output.search(r"ready in [\d.]+ s, syncing the Kommo simulator")
    assert output.search(r"embedded PostgreSQL ready") and output.search(r"embedded Redis ready")

    browser.send("Page.enable")
    browser.send("Page.navigate", url=f"{base}/#token={token}")
    until(
        "the WebSocket to be live",
        lambda: browser.eval("document.body.dataset.conn") == "live",
        20,
        0.25,
    )
    live = until(
        "lead changes arriving over the WebSocket",
        lambda: (
            browser.eval("document.querySelectorAll('#rows tr[data-origin=\"live\"]').length") >= 2
        ),
        45,
        0.25,
    )
    assert live
    until(
        "the status cards",
        lambda: browser.eval("document.querySelector('#c-reconcile .big').textContent").endswith(
            "ago"
        ),
        15,
        0.25,
    )
    rows = browser.eval("[...document.querySelectorAll('#rows tr')].map(r => r.innerText)")
    assert rows and all(re.search(r"\b2\d{7}\b", r) for r in rows[:5]), rows[:5]
    assert "#token=" not in browser.eval("location.href")  # taken out of the address bar
    shot = browser.send("Page.captureScreenshot", format="png")
    SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))

    # Ctrl-C to the whole group: every process it started must be gone within 15 s.
    family = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
    ours = (f"{ROOT / '.local' / 'pgdata'} ", f"{ROOT / '.local' / 'redis'} ")
    embedded = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any(mark in " ".join(p.info["cmdline"] or []) + " " for mark in ours)
    ]
    embedded += [c.pid for pid in embedded for c in psutil.Process(pid).children(recursive=True)]
    assert len(embedded) >= 2, "expected embedded Postgres and Redis processes"
    stop_started = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(15) == 0, output.tail()
    stopped_in = time.monotonic() - stop_started

    def all_gone() -> bool:
        try:
            os.killpg(proc.pid, 0)
            return False
        except ProcessLookupError:
            pass
        return not any(
            psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
            for pid in [*family, *embedded]
        )

    until("every process to be gone", all_gone, 15 - stopped_in)
    assert output.search(r"devenv: stopped")
    env_file = output.search(r"environment\s+(\S+)")
    assert env_file and not (tmp_path / env_file.group(1)).exists()  # removed when it stopped
    with capsys.disabled():
        sys.stdout.write(
            f"\n  time to /readyz 200 (embedded services): {time_to_ready:.1f} s;"
            f" {live and 'live rows arrived'}; stopped in {stopped_in:.1f} s;"
            f" {len(family)} processes + {len(embedded)} embedded; screenshot"
            f" {SCREENSHOT}\n"
        )
