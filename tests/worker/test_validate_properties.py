"""The worker's image check on any bytes (a property): each file is taken with a
content type or refused with a reason, never an error that would stop its batch."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reka_ingest.core.errors import FileRejected
from reka_ingest.core.states import Reason
from reka_ingest.files.validate import check_image
from tests.support.images import image_bytes

MAGIC = [
    b"\xff\xd8\xff\xe0",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    b"II*\x00",  # TIFF
    b"BM",
    b"",
]
REASONS = {
    Reason.NOT_AN_IMAGE,
    Reason.TRUNCATED_IMAGE,
    Reason.UNSUPPORTED_FORMAT,
    Reason.TOO_LARGE,
    Reason.EMPTY_FILE,
}


def _damaged(data: bytes, cut: int, noise: bytes) -> bytes:
    return data[: cut % (len(data) + 1)] + noise


contents = st.one_of(
    st.builds(lambda m, tail: m + tail, st.sampled_from(MAGIC), st.binary(max_size=2048)),
    st.builds(
        _damaged,
        st.sampled_from([image_bytes(1), image_bytes(2, fmt="PNG"), image_bytes(3, fmt="GIF")]),
        st.integers(min_value=0),
        st.binary(max_size=64),
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(contents)
def test_any_bytes_are_taken_or_refused_with_a_reason(data: bytes) -> None:
    with tempfile.NamedTemporaryFile(suffix=".jpg") as fh:
        fh.write(data)
        fh.flush()
        try:
            content_type = check_image(Path(fh.name), max_bytes=10_000_000)
        except FileRejected as err:
            assert err.reason in REASONS and err.message
        else:
            assert content_type.startswith("image/")
