"""Open a page in headless Chromium the way a person would, through the DevTools protocol.

A small CDP client over ``websockets``' synchronous client: load a file:// page, collect console
errors, uncaught exceptions and failed loads, read every <img>'s decoded size and take a screenshot.
Waits are on protocol events (the DevTools line on stderr, the load event), never on sleeps.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import signal
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT = 60  # seconds for any one protocol reply; a page of inlined PNGs loads in well under one


def chromium_path() -> str | None:
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


@dataclass
class PageCheck:
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    images: list[dict] = field(default_factory=list)  # {"src": first 40 chars, "complete", "width"}
    screenshot: bytes = b""
    title: str = ""


class _Session:
    def __init__(self, ws):
        self.ws, self.ids, self.events = ws, itertools.count(1), []

    def send(self, method: str, session: str | None = None, **params):
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params,
                                 **({"sessionId": session} if session else {})}))
        while True:
            msg = json.loads(self.ws.recv(timeout=TIMEOUT))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str):
        while True:
            for i, msg in enumerate(self.events):
                if msg.get("method") == method:
                    return self.events.pop(i)
            self.events.append(json.loads(self.ws.recv(timeout=TIMEOUT)))


def _errors(events: list[dict]) -> list[str]:
    out = []
    for e in events:
        p = e.get("params", {})
        if e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
        elif e.get("method") == "Runtime.exceptionThrown":
            details = p.get("exceptionDetails", {})
            out.append(f"exception: {details.get('text', '')} {details.get('exception', {}).get('description', '')}")
        elif e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append("log: " + p["entry"].get("text", ""))
    return out


IMAGES_JS = ("JSON.stringify([...document.images].map(i => ({src: i.src.slice(0, 40), complete: i.complete, "
             "width: i.naturalWidth})))")


def check_page(path: Path, width: int = 1280, height: int = 2000) -> PageCheck:
    """Load ``path`` in a fresh headless Chromium; report errors, image sizes and a viewport screenshot."""
    from websockets.sync.client import connect

    # Chromium's helper processes may still write the profile after the main one is gone: kill the whole
    # process group, and let a profile left half-deleted not fail the check
    with tempfile.TemporaryDirectory(prefix="fastseg-chromium-", ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen([chromium_path(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                 "--hide-scrollbars", "--remote-debugging-port=0", f"--user-data-dir={profile}",
                                 "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            url = _devtools_url(proc)
            with connect(url, max_size=None, open_timeout=TIMEOUT) as ws:
                return _run(_Session(ws), path, width, height)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def _devtools_url(proc) -> str:
    for line in proc.stderr:  # Chromium announces its endpoint on stderr once it listens
        m = re.search(r"DevTools listening on (ws://\S+)", line)
        if m:
            return m.group(1)
    raise RuntimeError(f"chromium exited ({proc.wait()}) without a DevTools endpoint")


def _run(cdp: _Session, path: Path, width: int, height: int) -> PageCheck:
    target = cdp.send("Target.createTarget", url="about:blank")["targetId"]
    sid = cdp.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Page", "Runtime", "Log"):
        cdp.send(f"{domain}.enable", session=sid)
    cdp.send("Emulation.setDeviceMetricsOverride", session=sid, width=width, height=height, deviceScaleFactor=1,
             mobile=False)
    cdp.send("Page.navigate", session=sid, url=Path(path).absolute().as_uri())
    cdp.wait_for("Page.loadEventFired")
    images = json.loads(cdp.send("Runtime.evaluate", session=sid, expression=IMAGES_JS,
                                 returnByValue=True)["result"]["value"])
    title = cdp.send("Runtime.evaluate", session=sid, expression="document.title", returnByValue=True)["result"]["value"]
    shot = base64.b64decode(cdp.send("Page.captureScreenshot", session=sid, format="png")["data"])
    return PageCheck(errors=_errors(cdp.events), images=images, screenshot=shot, title=title)
