"""Each kind of bad file gets its own reason code before any byte is sent."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from reka_ingest.core.errors import FileRejected
from reka_ingest.core.states import Reason
from reka_ingest.files.validate import check_image
from tests.support.images import image_bytes, write_image

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


# An unreadable file: tests/worker/test_unreadable.py drops to another uid, since
# root reads any file.
