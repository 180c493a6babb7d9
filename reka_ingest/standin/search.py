"""Search over captions and detection class names, with a deterministic 0..1 score.

Reka's search is a vision model; the stand-in needs something a test can
predict. Query and document are split into lower-case word tokens, a final
"s" is dropped from longer words ("cars" finds "car"), and every distinct
query token scores:

- `CLASS_AND_CAPTION` when it is among the image's detection class names and
  in its caption,
- `CLASS_ONLY` when only a class name has it (a detector saw it),
- `CAPTION_ONLY` when only the caption has it,
- 0 otherwise.

The image's score is the mean over query tokens, so 1.0 means every word was
found in both places. Only images uploaded with `index: true` whose indexing
finished (status 2) are searchable. Ties break by newer upload, then id.
`search_mode`, `image_weight` and `text_weight` are validated and otherwise
ignored (there is no vision model here).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from reka_ingest.core.constants import SEARCH_MAX_RESULTS_DEFAULT
from reka_ingest.standin.errors import invalid
from reka_ingest.standin.metadata import DETECTIONS_KEY

CLASS_AND_CAPTION: Final = 1.0
CLASS_ONLY: Final = 0.8
CAPTION_ONLY: Final = 0.6
SEARCH_MODES: Final = frozenset({"vision", "joined"})
_PLURAL_MIN_LEN: Final = 4
_WORD = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> frozenset[str]:
    """Lower-case word tokens with a naive plural folded ("Cars" -> "car")."""
    words = _WORD.findall(text.lower().replace("_", " "))
    return frozenset(
        w[:-1] if len(w) >= _PLURAL_MIN_LEN and w.endswith("s") and not w.endswith("ss") else w
        for w in words
    )


def _class_tokens(meta: dict[str, Any]) -> frozenset[str]:
    detections = meta.get(DETECTIONS_KEY) or []
    return tokens(" ".join(str(d.get("class_name", "")) for d in detections))


def score(query: frozenset[str], meta: dict[str, Any]) -> float:
    """Mean per-token score of `query` against one image's metadata, in 0..1."""
    if not query:
        return 0.0
    caption = tokens(str(meta.get("caption") or ""))
    classes = _class_tokens(meta)
    total = 0.0
    for word in query:
        in_class, in_caption = word in classes, word in caption
        if in_class and in_caption:
            total += CLASS_AND_CAPTION
        elif in_class:
            total += CLASS_ONLY
        elif in_caption:
            total += CAPTION_ONLY
    return round(total / len(query), 6)


@dataclass(frozen=True, slots=True)
class SearchRequest:
    query: frozenset[str]
    max_results: int
    threshold: float | None


def _optional_number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(f"{key} must be a number or null", param=key)
    return float(value)


def parse_request(body: Any) -> SearchRequest:
    """An ImageSearchRequest (OpenAPI) checked field by field; 400 naming the field."""
    if not isinstance(body, dict):
        raise invalid("search body must be a JSON object", param="body")
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise invalid("query must be a non-empty string", param="query")
    max_results = body.get("max_results", SEARCH_MAX_RESULTS_DEFAULT)
    if isinstance(max_results, bool) or not isinstance(max_results, int) or max_results < 1:
        raise invalid("max_results must be a positive integer", param="max_results")
    mode = body.get("search_mode", "vision")
    if mode not in SEARCH_MODES:
        raise invalid("search_mode must be 'vision' or 'joined'", param="search_mode")
    for key in ("image_weight", "text_weight"):
        _optional_number(body, key)
    return SearchRequest(tokens(query), max_results, _optional_number(body, "threshold"))


def rank(
    request: SearchRequest, candidates: Iterable[tuple[str, float, dict[str, Any]]]
) -> list[tuple[str, float]]:
    """(image_id, score) best first, from (image_id, upload_timestamp, metadata) candidates."""
    scored = []
    for image_id, uploaded, meta in candidates:
        s = score(request.query, meta)
        if s <= 0.0 or (request.threshold is not None and s < request.threshold):
            continue
        scored.append((-s, -uploaded, image_id))
    scored.sort()
    return [(image_id, -neg) for neg, _, image_id in scored[: request.max_results]]
