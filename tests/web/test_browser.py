"""The web page in a real browser during a real run.

Headless Chromium from Debian's packages (`apt-get install chromium`; `make
test` installs it when it runs as root), driven by Playwright pointed at that
executable: no browser is downloaded. The service runs as real processes
against the stand-in (tests/support/service.py) with `reka-ingest web` beside
them. The test makes three uploads fail (the stand-in answers 500), drops
images and watches the page's indexed count rise without a reload, clicks
the retry button of the failures' reason, sees them indexed too, and saves a
screenshot under pytest's tmp dir.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reka_ingest.cli.processes import cli_argv
from reka_ingest.core.bundled_redis import free_port
from reka_ingest.core.states import FileState, Reason
from tests.support.images import write_image
from tests.support.service import Service, _listening, wait_for

CHROMIUM_NAMES = ("chromium", "chromium-browser")
BROKEN = 3  # files whose upload fails, then are retried from the page
GOOD = 4  # files dropped while the page watches
PAGE_WAIT_MS = 25_000
IMAGES_LOADED = "() => [...document.images].every(i => i.complete && i.naturalWidth > 0)"


def chromium() -> str:
    """Debian's chromium, or skip saying why (and how `make test` gets it)."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "no chromium on PATH: `make test` installs Debian's package when run as root"
        " (apt-get install -y chromium); as another user, install it to run this test"
    )


def playwright_api() -> Any:
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415 - optional at import
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    return sync_playwright


@pytest.fixture
def service(tmp_path: Path, redis_url: str) -> Iterator[Service]:
    web_port = free_port()
    svc = Service(
        tmp_path,
        redis_url,
        env={
            "INGEST_UPLOADS_PER_DAY": "50",
            "INGEST_BATCH_MAX_FILES": "5",
            "INGEST_BATCH_MAX_WAIT": "0.5",
            "INGEST_UPLOAD_MAX_RETRIES": "0",
            "INGEST_MIN_FILE_AGE": "0.3",
            "INGEST_WEB_PORT": str(web_port),
        },
        standin_env={"STANDIN_INDEX_DELAY": "0.3"},
    )
    try:
        svc.start()
        svc.supervisor.start("web", cli_argv("web"), svc.env)
        wait_for(lambda: _listening(web_port), 20, "the web page to listen")
        yield svc
    finally:
        svc.stop()


def drop(inbox: Path, folder: str, count: int, seed: int) -> None:
    for i in range(count):
        target = inbox / folder / f"img{seed + i}.jpg"
        tmp = target.with_name(target.name + ".part")
        write_image(tmp, seed + i, size=(320, 240))
        os.replace(tmp, target)


def count_of(page: Any, state: str) -> int:
    return int(page.text_content(f'[data-count="{state}"]'))


@pytest.mark.timeout(60)
def test_the_page_in_a_browser_during_a_real_run(service: Service, tmp_path: Path) -> None:
    executable = chromium()
    sync_playwright = playwright_api()
    started = time.monotonic()

    def mark(what: str) -> None:
        print(f"  {time.monotonic() - started:5.1f} s  {what}")

    url = f"http://127.0.0.1:{service.env['INGEST_WEB_PORT']}/"

    # Uploads fail while the stand-in answers 500: three files fail with upload_failed.
    service.standin_post("/_standin/faults", {"fail_share": 1.0})
    drop(service.inbox, "broken", BROKEN, seed=100)
    wait_for(
        lambda: service.counts()[FileState.FAILED] == BROKEN,
        20,
        f"{BROKEN} failed uploads",
        on_timeout=service.diagnose,
    )
    assert {f.reason for f in service.files()} == {Reason.UPLOAD_FAILED}
    service.standin_post("/_standin/faults", {"fail_share": 0.0})
    mark(f"{BROKEN} files failed with upload_failed")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            mark("page loaded")
            assert count_of(page, "failed") == BROKEN
            assert count_of(page, "indexed") == 0
            # The failures show with thumbnails (real JPEGs from failed/).
            thumbs = page.locator("#failures img.thumb")
            assert thumbs.count() == BROKEN
            first = thumbs.first.get_attribute("src")
            shot = httpx.get(f"{url.rstrip('/')}{first}", timeout=10)
            assert shot.headers["content-type"] == "image/jpeg"

            # Files dropped now: the page redraws itself and its indexed count rises.
            drop(service.inbox, "cam1", GOOD, seed=200)
            page.wait_for_function(
                f"() => Number(document.querySelector('[data-count=indexed]').textContent)"
                f" >= {GOOD}",
                timeout=PAGE_WAIT_MS,
            )
            assert page.url == url  # no reload: the live part was redrawn
            mark(f"the page shows {GOOD} indexed")

            # What the page shows before the retry: the failures, their thumbnails, the button.
            page.wait_for_function(IMAGES_LOADED, timeout=PAGE_WAIT_MS)
            before = tmp_path / "web-page-failures.png"
            page.screenshot(path=str(before), full_page=True)

            # The retry button of the failures' reason: the same code path as the command.
            page.click(f'button[value="{Reason.UPLOAD_FAILED.value}"]')
            page.wait_for_selector("#notice")
            notice = page.text_content("#notice") or ""
            assert f"requeued {BROKEN} file(s)" in notice, notice
            mark("retry clicked")
            page.wait_for_function(
                f"() => Number(document.querySelector('[data-count=indexed]').textContent)"
                f" >= {GOOD + BROKEN}",
                timeout=PAGE_WAIT_MS,
            )
            assert count_of(page, "failed") == 0
            mark(f"the page shows {GOOD + BROKEN} indexed, none failed")
            # Wait for the redrawn thumbnails, then keep what the page shows.
            page.wait_for_function(IMAGES_LOADED, timeout=PAGE_WAIT_MS)
            screenshot = tmp_path / "web-page.png"
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert before.stat().st_size > 10_000 and screenshot.stat().st_size > 10_000
    print(f"\nscreenshots of the web page: {before} (failures), {screenshot} (after the retry)")
