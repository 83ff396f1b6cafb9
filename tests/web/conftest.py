"""Fixtures of the browser tests: the real service in a subprocess on loopback, and Debian's Chromium.

The service runs ``python -m service`` on a copy of the lead's ``tiny_bundle``
(or of ``DEEPMINER_TEST_WEB_BUNDLE``) with a fresh SQLite database and ``DEEPMINER_AUTH=all``, so every request the
pages make must carry the token typed into them. Chromium is Debian's
``/usr/bin/chromium`` driven by Playwright for Python (never ``playwright
install``). Without it, or without Playwright, the browser tests fail
(``require_or_skip`` in ``tests/conftest.py``). Every test leaves a screenshot in
``tests/artifacts/web/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import require_or_skip

CHROMIUM = Path(os.environ.get("DEEPMINER_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "web"
REPO = Path(__file__).resolve().parents[2]
VIEWPORT = {"width": 1280, "height": 720}
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Service:
    """The running service: its base URL and a token per role-holder."""

    url: str
    tokens: dict[str, str]
    log: Path

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def client(self, who: str = "dr_a") -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.auth(who), timeout=60.0)


# Who may do what: two annotators (for conflicts) and a reader (for 403s).
ROLES = {"dr_a": "annotator", "dr_b": "annotator", "viewer": "reader"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the service was not ready within {START_TIMEOUT_S:.0f} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="session")
def web_bundle(request: pytest.FixtureRequest) -> Path:
    """``tiny_bundle``, or the bundle named by ``DEEPMINER_TEST_WEB_BUNDLE`` (e.g. ``bundles/demo``) to try the pages on it."""
    chosen = os.environ.get("DEEPMINER_TEST_WEB_BUNDLE")
    if chosen:
        return Path(chosen).resolve()
    bundle: Path = request.getfixturevalue("tiny_bundle")
    return bundle


@pytest.fixture(scope="session")
def service(web_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """``python -m service`` on a copy of the bundle, a fresh SQLite file and bearer tokens for every read."""
    with run_service(web_bundle, tmp_path_factory.mktemp("web-service")) as started:
        yield started


@contextmanager
def run_service(web_bundle: Path, root: Path, **settings: str) -> Iterator[Service]:
    """The service of :func:`service` in ``root``; ``settings`` add ``DEEPMINER_<NAME>`` variables."""
    bundle = root / "bundle"
    shutil.copytree(web_bundle, bundle)
    tokens = {name: secrets.token_urlsafe(24) for name in ROLES}
    specs = [
        {"name": name, "role": role, "sha256": hashlib.sha256(tokens[name].encode()).hexdigest()}
        for name, role in ROLES.items()
    ]
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPMINER_")}
    env.update(
        DEEPMINER_BUNDLE=str(bundle),
        DEEPMINER_DATABASE_URL=f"sqlite:///{root / 'labels.db'}",
        DEEPMINER_HOST="127.0.0.1",
        DEEPMINER_PORT=str(port),
        DEEPMINER_AUTH="all",
        DEEPMINER_TOKENS=json.dumps(specs),
        DEEPMINER_LOG_LEVEL="warning",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    )
    env.update({f"DEEPMINER_{name.upper()}": value for name, value in settings.items()})
    log = root / "service.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO, env=env, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, log)
        yield Service(url=url, tokens=tokens, log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, through Playwright; :func:`require_or_skip` when either is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require_or_skip("Playwright for Python is not installed (pip install -e '.[test]')")
    if not CHROMIUM.is_file():
        require_or_skip(f"{CHROMIUM} is missing (apt-get install chromium; never `playwright install`)")
    from playwright.sync_api import expect

    # Explanations run on the CPU in CI: give assertions the time an inference may take.
    expect.set_options(timeout=20_000)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class PageProblems:
    """What went wrong inside the page: uncaught exceptions, and requests that left the service."""

    errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)


@pytest.fixture
def page(browser: Any, service: Service, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh tab (own storage) at 1280×720; screenshot saved after the test; no uncaught errors, nothing off-host."""
    with open_page(browser, service, request) as tab:
        yield tab


@contextmanager
def open_page(browser: Any, service: Service, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The tab of :func:`page` on ``service``."""
    context = browser.new_context(viewport=VIEWPORT, base_url=service.url)
    context.set_default_timeout(20_000)
    tab = context.new_page()
    problems = PageProblems()
    tab.on("pageerror", lambda exc: problems.errors.append(str(exc)))
    allowed = (service.url, "data:", "blob:")
    tab.on("request", lambda r: None if r.url.startswith(allowed) else problems.foreign_requests.append(r.url))
    tab.problems = problems
    try:
        yield tab
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        try:
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name).strip("_")[:120]
            tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        finally:
            context.close()
    assert not problems.errors, f"uncaught errors in the page: {problems.errors}"
    assert not problems.foreign_requests, f"the page reached beyond the service: {problems.foreign_requests}"


def _use_token(page: Any, token: str) -> None:
    # Only where the tab has none yet: a token typed in later (then a reload) must win.
    key = "'deepminer.token'"
    page.context.add_init_script(
        f"if (!sessionStorage.getItem({key})) sessionStorage.setItem({key}, {json.dumps(token)})"
    )


def _sign_in(page: Any, token: str) -> None:
    if page.locator("#session").get_attribute("open") is None:
        page.locator("#session summary").click()
    page.get_by_label("Bearer token").fill(token)
    page.get_by_role("button", name="Use", exact=True).click()


@pytest.fixture
def use_token() -> Any:
    """``use_token(page, token)``: the tab starts with the token in its sessionStorage, as if typed in once before."""
    return _use_token


@pytest.fixture
def sign_in() -> Any:
    """``sign_in(page, token)``: type the token into the page header's sign-in form, as a user does."""
    return _sign_in
