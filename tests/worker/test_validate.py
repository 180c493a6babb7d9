"""Each kind of bad file gets its own reason code before any byte is sent."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from tests.support.images import image_bytes, write_image
from worker.errors import FileRejected
from worker.states import Reason
from worker.validate import check_image

LIMIT = 5 * 1024 * 1024


def _reason(path: Path, limit: int = LIMIT) -> str:
    with pytest.raises(FileRejected) as info:
        check_image(path, max_bytes=limit)
    assert info.value.message  # always a sentence for a person
    return info.value.reason


def test_good_jpeg_and_png_pass_with_their_content_types(tmp_path: Path) -> None:
    assert check_image(write_image(tmp_path / "a.jpg", 1), max_bytes=LIMIT) == "image/jpeg"
    assert check_image(write_image(tmp_path / "b.png", 2), max_bytes=LIMIT) == "image/png"


def test_each_bad_input_has_its_reason(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert _reason(empty) == Reason.EMPTY_FILE

    text = tmp_path / "text.jpg"
    text.write_text("hello, not an image")
    assert _reason(text) == Reason.NOT_AN_IMAGE

    full = image_bytes(3, size=(256, 256))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(full[: len(full) // 2])
    assert _reason(truncated) == Reason.TRUNCATED_IMAGE

    big = write_image(tmp_path / "big.jpg", 4)
    assert _reason(big, limit=100) == Reason.TOO_LARGE

    assert _reason(tmp_path / "missing.jpg") == Reason.FILE_MISSING

    link = tmp_path / "link.jpg"
    link.symlink_to(write_image(tmp_path / "target.jpg", 5))
    assert _reason(link) == Reason.REFUSED_PATH

    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    assert _reason(folder) == Reason.NOT_AN_IMAGE


def test_a_format_the_api_does_not_take(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="ICO")
    ico = tmp_path / "icon.jpg"
    ico.write_bytes(buf.getvalue())
    assert _reason(ico) == Reason.UNSUPPORTED_FORMAT


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file(tmp_path: Path) -> None:
    locked = write_image(tmp_path / "locked.jpg", 6)
    locked.chmod(0)
    try:
        assert _reason(locked) == Reason.UNREADABLE
    finally:
        locked.chmod(0o644)


def test_a_jpeg_cut_short_fails_even_without_a_full_decode(tmp_path: Path) -> None:
    # The End Of Image marker is the fast path's evidence; cut anywhere, it is gone.
    full = image_bytes(4, size=(128, 96))
    assert full.endswith(b"\xff\xd9")
    for cut in (len(full) - 1, len(full) - 2, len(full) * 3 // 4):
        path = tmp_path / f"cut{cut}.jpg"
        path.write_bytes(full[:cut])
        assert _reason(path) == Reason.TRUNCATED_IMAGE


def test_a_jpeg_with_data_after_its_end_marker_still_passes(tmp_path: Path) -> None:
    # No marker at the very end: the full decode judges it, as before.
    path = tmp_path / "trailer.jpg"
    path.write_bytes(image_bytes(5) + b"camera trailer")
    assert check_image(path, max_bytes=LIMIT) == "image/jpeg"
