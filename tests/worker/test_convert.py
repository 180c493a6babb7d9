"""HEIC/HEIF and AVIF are sent as JPEG; the original bytes stay the file.

Real files throughout: HEIC written by pillow-heif, AVIF by Pillow, each with
an EXIF orientation of 6 (turn 90 degrees clockwise to show). The conversion is
tested alone (upright, RGB, EXIF kept without its orientation, a damaged file
refused, temporary files removed and swept), then through the real uploader
against the stand-in on loopback, on SQLite and PostgreSQL: the stand-in holds
a JPEG, the row is indexed with the conversion recorded and the original's
sha256, `done/` keeps the original bytes, and a damaged HEIC fails alone.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from reka_ingest.core.errors import FileRejected
from reka_ingest.core.states import FileState, Reason
from reka_ingest.files import convert
from reka_ingest.files.heif import ensure_registered
from reka_ingest.files.validate import check_image
from reka_ingest.standin.runner import RunningStandin
from tests.support.clock import Clock
from tests.support.images import image_bytes
from tests.worker.conftest import rows_by_path, stage
from worker.poller import poll_due
from worker.runtime import Runtime
from worker.uploader import upload_batch

ORIENTATION = 0x0112
MAKE = 0x010F
RED, BLUE = (220, 20, 20), (20, 20, 220)
BIG = 10 * 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def picture(width: int = 64, height: int = 32, *, shade: int = 0) -> Image.Image:
    """Red, with a blue square in the stored top-left corner."""
    im = Image.new("RGB", (width, height), (RED[0] - shade, RED[1], RED[2]))
    im.paste(BLUE, (0, 0, height // 2, height // 2))
    return im


def encoded(fmt: str, *, orientation: int = 6, shade: int = 0, mode: str = "RGB") -> bytes:
    """A real HEIF (pillow-heif) or AVIF (Pillow) file with EXIF orientation and make."""
    ensure_registered()
    im = picture(shade=shade).convert(mode)
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[MAKE] = "ReCam"
    buf = io.BytesIO()
    im.save(buf, format=fmt, exif=exif.tobytes(), quality=90)
    return buf.getvalue()


def rgb(im: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    pixel = im.getpixel(xy)
    assert isinstance(pixel, tuple)
    return pixel


def is_blue(im: Image.Image, xy: tuple[int, int]) -> bool:
    r, g, b = rgb(im, xy)[:3]
    return b > 150 > max(r, g)


def is_red(im: Image.Image, xy: tuple[int, int]) -> bool:
    r, g, b = rgb(im, xy)[:3]
    return r > 150 > max(g, b)


def damaged_heic(seed: int) -> bytes:
    """A HEIC whose header is whole and whose coded picture is cut short (a copy that
    stopped early): it opens, its picture cannot be decoded."""
    ensure_registered()
    buf = io.BytesIO()
    with Image.open(io.BytesIO(image_bytes(seed, size=(128, 96)))) as im:
        im.save(buf, format="HEIF", quality=90)
    data = buf.getvalue()
    return data[: len(data) - len(data) // 4]


# --- the conversion alone ------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "name"), [("HEIF", "IMG_0001.HEIC"), ("AVIF", "pic.avif")])
def test_a_turned_picture_becomes_an_upright_rgb_jpeg_keeping_its_exif(
    tmp_path: Path, fmt: str, name: str
) -> None:
    data = encoded(fmt)
    src = tmp_path / name
    src.write_bytes(data)
    folder = tmp_path / "convert"

    done = convert.to_jpeg(src, folder, name=name, quality=85, max_bytes=BIG)

    assert done.path.parent == folder and done.path.name.startswith(convert.TEMP_PREFIX)
    assert done.filename == Path(name).stem + ".jpg"
    assert (done.content_type, done.source_format) == ("image/jpeg", fmt)
    assert done.description == f"{fmt} -> JPEG (quality 85)"
    assert (done.original_sha256, done.original_size) == (sha(data), len(data))
    assert src.read_bytes() == data  # the original is never touched
    with Image.open(done.path) as jpeg:
        assert (jpeg.format, jpeg.mode) == ("JPEG", "RGB")
        assert jpeg.size == (32, 64)  # stored 64 x 32, turned a quarter clockwise
        assert is_blue(jpeg, (28, 3))  # the stored top-left, now top-right
        assert is_red(jpeg, (3, 3)) and is_red(jpeg, (28, 60))
        exif = jpeg.getexif()
        assert exif.get(MAKE) == "ReCam"
        assert ORIENTATION not in exif  # applied: a viewer must not turn it again


def test_a_transparent_picture_is_laid_on_white(tmp_path: Path) -> None:
    im = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    im.paste((20, 20, 220, 255), (0, 0, 16, 16))
    src = tmp_path / "alpha.avif"
    im.save(src, format="AVIF", quality=90)
    done = convert.to_jpeg(src, tmp_path / "convert", name="alpha.avif", quality=90, max_bytes=BIG)
    with Image.open(done.path) as jpeg:
        assert jpeg.mode == "RGB"
        assert min(rgb(jpeg, (28, 28))) > 235  # transparent: white, not black
        assert is_blue(jpeg, (4, 4))


def test_a_damaged_heic_is_refused_with_conversion_failed_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    src = tmp_path / "bad.heic"
    src.write_bytes(damaged_heic(1))
    folder = tmp_path / "convert"
    with pytest.raises(FileRejected) as caught:
        convert.to_jpeg(src, folder, name="bad.heic", quality=90, max_bytes=BIG)
    assert caught.value.reason == Reason.CONVERSION_FAILED
    assert "damaged" in caught.value.message and "\n" not in caught.value.message
    assert not folder.exists() or list(folder.iterdir()) == []


def test_too_many_pixels_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "big.heic"
    src.write_bytes(encoded("HEIF"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 64 x 32 = 2048 is over it
    with pytest.raises(FileRejected) as caught:
        convert.to_jpeg(src, tmp_path / "convert", name="big.heic", quality=90, max_bytes=BIG)
    assert caught.value.reason == Reason.CONVERSION_FAILED
    assert "too many pixels" in caught.value.message


def test_check_image_takes_heif_and_avif_as_convertible_and_refuses_damaged_ones(
    tmp_path: Path,
) -> None:
    heic, avif = tmp_path / "a.heic", tmp_path / "b.avif"
    heic.write_bytes(encoded("HEIF"))
    avif.write_bytes(encoded("AVIF"))
    assert check_image(heic, max_bytes=BIG) == "image/heif"
    assert check_image(avif, max_bytes=BIG) == "image/avif"
    assert convert.is_convertible("image/heif") and not convert.is_convertible("image/jpeg")

    cut = tmp_path / "cut.heic"
    cut.write_bytes(damaged_heic(2))
    with pytest.raises(FileRejected) as caught:
        check_image(cut, max_bytes=BIG)
    assert caught.value.reason == Reason.TRUNCATED_IMAGE
    # The uploader reads only the header: the conversion finds the damage.
    assert check_image(cut, max_bytes=BIG, decode_convertible=False) == "image/heif"

    headless = tmp_path / "headless.heic"
    headless.write_bytes(heic.read_bytes()[:64])
    with pytest.raises(FileRejected) as caught:
        check_image(headless, max_bytes=BIG)
    assert caught.value.reason == Reason.TRUNCATED_IMAGE
    assert "HEIF image data is damaged" in caught.value.message


def test_ensure_registered_is_idempotent() -> None:
    ensure_registered()
    ensure_registered()
    assert "HEIF" in Image.OPEN
    assert Image.ID.count("HEIF") == 1


def test_common_openers_come_first_and_avif_before_heif() -> None:
    """In a fresh process (this one's Pillow may be set up already): JPEG is tried
    before the openers that parse any bytes before refusing them, AVIF before HEIF."""
    code = (
        "from PIL import Image\n"
        "from reka_ingest.files.heif import ensure_registered\n"
        "ensure_registered()\n"
        "print(','.join(Image.ID))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    order = out.strip().split(",")
    assert order.index("JPEG") < min(order.index(f) for f in ("IM", "IMT", "IPTC"))
    assert order.index("PNG") < order.index("IM")
    assert order.index("AVIF") < order.index("HEIF")


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_the_generic_mif1_brand_reaches_the_right_decoder(tmp_path: Path, fmt: str) -> None:
    """Both openers accept `mif1`; an AVIF under it must not go to pillow-heif (no AV1)."""
    data = encoded(fmt)
    src = tmp_path / "generic.heif"
    src.write_bytes(data[:8] + b"mif1" + data[12:])
    assert check_image(src, max_bytes=BIG) == convert.CONVERTIBLE[fmt]
    done = convert.to_jpeg(src, tmp_path / "convert", name="g.heif", quality=90, max_bytes=BIG)
    assert done.source_format == fmt
    with Image.open(done.path) as jpeg:
        assert jpeg.size == (32, 64)


def test_a_batch_removes_its_jpegs_and_sweeps_only_stale_leftovers(tmp_path: Path) -> None:
    folder = tmp_path / "convert"
    folder.mkdir()
    stale = folder / f"{convert.TEMP_PREFIX}999-old.jpg"  # a killed worker's
    fresh = folder / f"{convert.TEMP_PREFIX}998-new.jpg"  # another worker's, in flight
    foreign = folder / "notes.txt"
    for p in (stale, fresh, foreign):
        p.write_bytes(b"x")
    long_ago = time.time() - 2 * convert.MIN_STALE_AFTER
    os.utime(stale, (long_ago, long_ago))
    os.utime(foreign, (long_ago, long_ago))
    src = tmp_path / "a.heic"
    src.write_bytes(encoded("HEIF"))

    with convert.Conversions(folder, quality=90, max_bytes=BIG, stale_after=60.0) as batch:
        made = batch.convert(7, src, name="a.heic")
        assert made.path.exists() and batch.get(7) == made
        assert batch.description(7) == "HEIF -> JPEG (quality 90)"
        assert batch.description(8) is None
        assert not stale.exists() and fresh.exists() and foreign.exists()
    assert not made.path.exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted([fresh.name, foreign.name])


# --- through the uploader, against the stand-in ----------------------------------------


def test_heic_and_avif_are_sent_as_jpeg_and_recorded_as_their_originals(
    make_rt: Callable[..., Runtime], standin: RunningStandin, clock: Clock
) -> None:
    rt = make_rt(convert_quality=80)
    heic, avif, jpeg = encoded("HEIF"), encoded("AVIF", shade=10), image_bytes(5)
    damaged = damaged_heic(3)
    batch = stage(
        rt,
        {"cam/IMG_1.HEIC": heic, "cam/b.avif": avif, "cam/c.jpg": jpeg, "cam/bad.heic": damaged},
    )

    report = upload_batch(rt, batch)

    assert (report.outcome, report.uploaded, report.failed) == ("done", 3, 1)
    rows = rows_by_path(rt)
    for rel, original, fmt in (("cam/IMG_1.HEIC", heic, "HEIF"), ("cam/b.avif", avif, "AVIF")):
        row = rows[rel]
        assert row.state == FileState.INDEXING, (rel, row.reason, row.message)
        assert row.conversion == f"{fmt} -> JPEG (quality 80)"
        # The original's identity, and no "changed after its claim".
        assert (row.sha256, row.size, row.message) == (sha(original), len(original), None)
        assert Path(row.final_path or "").read_bytes() == original
        assert Path(row.final_path or "").is_relative_to(rt.settings.ingest.done_path)
        record = standin.state.store.get(row.image_id or "")
        stored = standin.state.store.data(row.image_id or "")
        assert record is not None and stored is not None
        assert (record.filename, record.declared_content_type) == (
            Path(rel).stem + ".jpg",
            "image/jpeg",
        )
        assert record.content_type == "image/jpeg" and stored.startswith(b"\xff\xd8\xff")
        with Image.open(io.BytesIO(stored)) as sent:
            assert sent.size == (32, 64)
            assert is_blue(sent, (28, 3))
    plain = rows["cam/c.jpg"]
    assert (plain.conversion, plain.sha256) == (None, sha(jpeg))
    assert standin.state.store.data(plain.image_id or "") == jpeg

    bad = rows["cam/bad.heic"]
    assert (bad.state, bad.reason) == (FileState.FAILED, Reason.CONVERSION_FAILED)
    assert "damaged" in (bad.message or "")
    assert (bad.image_id, bad.conversion) == (None, None)
    assert (rt.settings.ingest.failed_path / "cam" / "bad.heic").read_bytes() == damaged
    assert bad.final_path == str(rt.settings.ingest.failed_path / "cam" / "bad.heic.error.json")
    # Every temporary JPEG is gone with the run.
    folder = rt.settings.ingest.data_dir / convert.FOLDER
    assert not folder.exists() or list(folder.iterdir()) == []

    clock.advance(100)
    assert poll_due(rt).indexed == 3
    rows = rows_by_path(rt)
    assert rows["cam/IMG_1.HEIC"].state == FileState.INDEXED
    assert rows["cam/IMG_1.HEIC"].conversion == "HEIF -> JPEG (quality 80)"


def test_a_heic_rewritten_after_its_claim_is_still_noticed(
    make_rt: Callable[..., Runtime], standin: RunningStandin
) -> None:
    rt = make_rt()
    claimed, rewritten = encoded("HEIF"), encoded("HEIF", shade=40)
    batch = stage(rt, {"cam/a.heic": claimed})
    row = rows_by_path(rt)["cam/a.heic"]
    Path(row.work_path).write_bytes(rewritten)  # after the claim hashed it

    report = upload_batch(rt, batch)

    assert (report.outcome, report.uploaded) == ("done", 1)
    row = rows_by_path(rt)["cam/a.heic"]
    assert (row.sha256, row.size) == (sha(rewritten), len(rewritten))
    assert "changed after it was claimed" in (row.message or "")
    assert row.conversion == "HEIF -> JPEG (quality 90)"
    assert Path(row.final_path or "").read_bytes() == rewritten
    stored = standin.state.store.data(row.image_id or "")
    assert stored is not None and stored.startswith(b"\xff\xd8\xff")
