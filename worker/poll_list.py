"""Reading many indexing statuses at once with List Images, where that takes fewer
requests than one Get Image per row.

List Images (`GET /v1/images?limit=&offset=`) returns the same `Image` objects as
Get Image, 100 a page, but promises no order, no total and no cursor. So a
listing is only ever a shortcut: an image it shows is taken as Get would have
returned it; an image it does not show (another order, a page shifted by a
concurrent upload, an account holding more than this ledger uploaded, an image
gone) is asked for with Get Image, as before. Nothing is decided from an
absence.

It is used only when it cannot cost more than it saves: every image this ledger
uploaded fits in `pages` pages (the ledger's highest file id bounds them, plus a
page of slack), and a round has more rows due than that. A burst of uploads in
a young account polls a few pages instead of thousands of Gets; a long-lived
account with millions of images and a few rows due keeps to Get Image. Paging
stops at the first short page, once every row due was seen, or at the bound. A
listing that fails (any API error) is dropped: the Gets follow.
"""

from __future__ import annotations

from collections.abc import Sequence

from reka_ingest.core.constants import LIST_LIMIT_MAX
from reka_ingest.core.errors import IngestError
from reka_ingest.core.logs import get_logger
from reka_ingest.ledger.polling import DuePoll, images_bound
from reka_ingest.reka.models import Image
from worker.runtime import Runtime

log = get_logger(__name__)

SLACK_PAGES = 1


def pages_for(bound: int) -> int:
    """Pages that hold `bound` images, plus the slack."""
    return -(-bound // LIST_LIMIT_MAX) + SLACK_PAGES


def listed_images(rt: Runtime, due: Sequence[DuePoll]) -> dict[str, Image]:
    """The due rows' images that List Images shows, by image id (empty when listing
    would not be cheaper than a Get per row, or failed)."""
    wanted = {d.image_id for d in due if d.image_id}
    if not wanted:
        return {}
    pages = pages_for(images_bound(rt.ledger))
    if pages >= len(wanted):
        return {}
    found: dict[str, Image] = {}
    for page in range(pages):
        try:
            images = rt.client.list(limit=LIST_LIMIT_MAX, offset=page * LIST_LIMIT_MAX)
        except IngestError as err:
            log.warning("poll_list_failed", page=page, error=str(err), action="get each image")
            break
        for image in images:
            if image.image_id in wanted:
                found[image.image_id] = image
        if len(found) == len(wanted) or len(images) < LIST_LIMIT_MAX:
            break
    return found
