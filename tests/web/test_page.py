"""What the web page shows, read from a real ledger (SQLite and PostgreSQL) and
the real Redis, and its retry button requeueing files as `reka-ingest retry` does."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import redis
from starlette.testclient import TestClient

from reka_ingest.core.constants import BUDGET_KEY
from reka_ingest.core.queues import UPLOAD_QUEUE
from reka_ingest.core.settings import Settings
from reka_ingest.core.states import FileState
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.queries import list_files
from reka_ingest.metrics.budget import BudgetView
from reka_ingest.web.data import quota_eta, read_page, safe_url
from tests.web.conftest import BASE, add_failed, add_file, thumb_source
from tests.web.test_security import retry_token

DAY = 86400.0


def count_on(html: str, state: str) -> int:
    found = re.search(rf'data-count="{state}">(\d+)<', html)
    assert found is not None, state
    return int(found.group(1))


def test_the_page_shows_counts_trend_folders_failures_and_links(
    make_client: Callable[..., TestClient],
    web_settings: Settings,
    ledger: Ledger,
    tmp_path: Path,
) -> None:
    now = time.time()
    image = thumb_source(tmp_path)
    for i in range(3):
        add_file(
            ledger,
            path=f"siteA/cam{i}/img{i}.jpg",
            work_path=str(tmp_path / f"w{i}"),
            state=FileState.INDEXED,
            image_url=f"https://images.reka.test/img{i}",
            finished_at=now - 30 - i * 120,  # one a minute ago, two in the last 5 minutes
        )
    add_file(ledger, path="siteB/q.jpg", work_path=str(tmp_path / "q"))
    add_file(ledger, path="root.jpg", work_path=str(tmp_path / "r"))
    add_file(
        ledger,
        path="siteB/<script>alert(1)</script>.jpg",
        work_path=str(image),
        state=FileState.INDEXED,
        image_url="javascript:alert(1)",
        finished_at=now - 10,
    )
    failed = add_failed(web_settings, ledger, "bad.jpg", reason="auth_failed", folder="siteA")
    add_failed(web_settings, ledger, "side.jpg", reason="bad_sidecar", folder="siteB", seed=3)

    html = make_client().get("/").text
    assert count_on(html, "indexed") == 4
    assert count_on(html, "queued") == 2
    assert count_on(html, "failed") == 2
    assert count_on(html, "total") == 8
    # Trend: seen and finished in the last 1/5/15 minutes.
    trend = html[html.index('id="trend"') : html.index("</table>", html.index('id="trend"'))]
    num = r'\s*<td class="num">(\d+)</td>'
    rows = re.findall(r"<td>(\d+) min</td>" + num + num, trend)
    assert [(int(m), int(seen), int(fin)) for m, seen, fin in rows] == [
        (1, 8, 4),  # the two failed rows and two indexed finished in the last minute
        (5, 8, 6),
        (15, 8, 6),
    ]
    assert "<polyline" in html
    # Folders: the top-level folder of each dropped path; the inbox root is named so.
    for name in ("siteA", "siteB", "(inbox root)"):
        assert f'<td class="path">{name}</td>' in html
    # Failures: thumbnail by row id, reason and message; a button for the retriable reason,
    # the hint for the one retry cannot take.
    assert f'src="/thumb/{failed}"' in html and "the API said no to bad.jpg" in html
    assert 'value="auth_failed"' in html and "retry 1 auth_failed" in html
    assert "re-drop the image with its fixed sidecar" in html
    assert 'name="reason" value="bad_sidecar"' not in html
    # Links: http(s) image URLs only; foreign text escaped.
    assert 'href="https://images.reka.test/img0"' in html
    assert "javascript:" not in html
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # The budget and the time to finish at the quota (no worker published one yet).
    assert 'id="quota"' in html and "2 file(s) to send need 1 request(s)" in html
    assert "no worker has published its budget" in html


def test_retry_button_requeues_the_files_as_the_command_does(
    make_client: Callable[..., TestClient],
    web_settings: Settings,
    ledger: Ledger,
    redis_url: str,
) -> None:
    ids = [
        add_failed(web_settings, ledger, f"f{i}.jpg", reason="auth_failed", seed=i)
        for i in range(3)
    ]
    other = add_failed(web_settings, ledger, "n.jpg", reason="not_an_image", seed=9)
    client = make_client()
    token = retry_token(client.get("/").text, "auth_failed")
    r = client.post(
        "/retry",
        data={"reason": "auth_failed", "token": token},
        headers={"Origin": BASE, "Sec-Fetch-Site": "same-origin"},
    )
    assert r.status_code == 303, r.text
    where = urlsplit(r.headers["location"])
    assert where.path == "/"
    assert parse_qs(where.query) == {
        "retried": ["auth_failed"],
        "requeued": ["3"],
        "skipped": ["0"],
    }
    rows = {f.id: f for f in list_files(ledger)}
    for file_id in ids:
        row = rows[file_id]
        assert row.state == FileState.QUEUED and row.reason is None and row.batch_id
        assert Path(row.work_path).parent.name.startswith("retry-")
        assert Path(row.work_path).is_file()
    assert rows[other].state == FileState.FAILED
    assert not list(web_settings.ingest.failed_path.glob("f*.jpg*"))  # moved, reason files gone
    # One message per batch, carrying its id alone.
    client_r = redis.Redis.from_url(redis_url)
    messages = client_r.lrange(UPLOAD_QUEUE, 0, -1)
    client_r.close()
    batch_ids = {rows[i].batch_id for i in ids}
    assert len(messages) == len(batch_ids)
    assert {json.loads(m)["headers"]["argsrepr"] for m in messages} == {f"[{b}]" for b in batch_ids}
    # The page after the redirect says what happened.
    page = client.get(r.headers["location"]).text
    assert "retry auth_failed: requeued 3 file(s)" in page
    assert count_on(page, "queued") == 3
    # Again: nothing left for that reason, so no button.
    assert 'name="reason" value="auth_failed"' not in page


def test_the_budget_and_time_at_the_quota_come_from_redis(
    web_settings: Settings, ledger: Ledger, redis_url: str, tmp_path: Path
) -> None:
    now = time.time()
    for i in range(25):
        add_file(ledger, path=f"a/{i}.jpg", work_path=str(tmp_path / f"{i}"))
    client = redis.Redis.from_url(redis_url)
    client.hset(BUDGET_KEY, mapping={"fp": "f00", "limit": 4, "per_second": 0, "window": DAY})
    client.zadd("reka_ingest:budget:f00:window", {"a": now - DAY + 3600, "b": now - 60})
    page = read_page(ledger, client, now=now, batch_size=5)
    client.close()
    assert (page.budget.limit, page.budget.used, page.budget.remaining) == (4, 2, 2)
    # 25 files at 5 a request: 5 requests; 2 go now, 3 wait: the first slot frees in 1 h,
    # then one every 6 h (4 a day).
    assert (page.quota.to_send, page.quota.requests) == (25, 5)
    assert page.quota.seconds is not None
    assert abs(page.quota.seconds - (3600 + 2 * DAY / 4)) < 5
    assert "2 of 4 left today, 3 must wait" in page.quota.words


def test_quota_eta() -> None:
    now = 1_000_000.0
    known = BudgetView(known=True, limit=100, used=100, remaining=0, refills_at=now + 600)
    # Nothing to send.
    assert quota_eta(0, batch_size=10, budget=known, now=now, at_rate=None).seconds == 0
    # Within the budget: the rate decides.
    fits = BudgetView(known=True, limit=100, used=10, remaining=90, refills_at=now + 600)
    assert quota_eta(500, batch_size=10, budget=fits, now=now, at_rate=120).seconds == 120
    assert quota_eta(500, batch_size=10, budget=fits, now=now, at_rate=None).seconds is None
    # Used up: 1000 files = 100 requests; the first at the refill, then 100 a day.
    eta = quota_eta(1000, batch_size=10, budget=known, now=now, at_rate=5)
    assert eta.requests == 100 and eta.seconds == 600 + 99 * DAY / 100
    # Never faster than the current rate.
    slow = quota_eta(10, batch_size=10, budget=known, now=now, at_rate=5000)
    assert slow.seconds == 5000
    # A server pause delays the start.
    paused = BudgetView(known=True, limit=100, used=0, remaining=100, paused_until=now + 90)
    assert quota_eta(10, batch_size=10, budget=paused, now=now, at_rate=10).seconds == 100
    # No daily limit: the rate alone; unknown budget: unknown.
    free = BudgetView(known=True, used=5)
    assert quota_eta(10, batch_size=10, budget=free, now=now, at_rate=30).seconds == 30
    unknown = quota_eta(10, batch_size=10, budget=BudgetView(known=False), now=now, at_rate=3)
    assert unknown.seconds is None and "unknown" in unknown.words


def test_only_http_links_are_kept() -> None:
    assert safe_url("https://x.test/a") == "https://x.test/a"
    assert safe_url("http://127.0.0.1:8765/_standin/files/abc") is not None
    bad_links = ("javascript:alert(1)", "data:text/html,x", "//evil.test/x", "file:///etc/x", "")
    for bad in bad_links:
        assert safe_url(bad) is None
