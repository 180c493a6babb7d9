"""INGEST_PATH_METADATA: the pattern (parse, match), its check at start, its
mismatch rule in `describe`, and a real Watcher recording folder values."""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reka_ingest.core.errors import FileRejected, SettingsError
from reka_ingest.core.path_pattern import NOT_TEXT_KEYS, Kind, PathPattern
from reka_ingest.core.settings import IngestSettings, PathMismatch, load_settings
from reka_ingest.core.states import FileState, Origin, Reason
from reka_ingest.core.text import shown
from reka_ingest.ledger import Ledger
from reka_ingest.reka.models import SecurityMetadata
from scheduler.backfill import backfill
from scheduler.describe import MetadataRules, describe
from scheduler.path_metadata import FolderMetadata
from scheduler.watcher import Watcher
from tests.scheduler.conftest import files_by_path, wait_for
from tests.scheduler.test_exif_time import NOV_27_1403_UTC, jpeg_with_exif
from tests.support.images import write_image

SITE_CAMERA = "{site_id}/{camera_id}/*"


def no_enqueue(_batch_id: int) -> None:
    """Batches stay queued in the ledger: these tests look at intake only."""


# --- parsing -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty pattern"),
        ("/", "empty pattern"),
        ("{}/x", "empty key"),
        ("{site}/{}", "empty key"),
        ("{a}/{a}", "appears twice"),
        ("{a}/*/{a}/**", "appears twice"),
        ("**/{a}", "only be the last"),
        ("x/**/y", "only be the last"),
        ("x{a}", "whole segment"),
        ("{a}x", "whole segment"),
        ("a{b}c", "whole segment"),
        ("{a", "whole segment"),
        ("a}", "whole segment"),
        ("{{a}}", "letters, digits"),
        ("cam*", "partial wildcards"),
        ("***", "partial wildcards"),
        ("a//b", "segment 2 is empty"),
        ("{1st}", "letters, digits"),
        ("{site id}", "letters, digits"),
        ("{index}", "not a text field"),
        ("{recorded_timestamp_utc}", "not a text field"),
        ("{detection_metadata}", "not a text field"),
        ("..", "not folder names"),
        ("{a}/./b", "not folder names"),
    ],
)
def test_a_bad_pattern_is_refused_saying_why(text: str, says: str) -> None:
    with pytest.raises(ValueError) as err:
        PathPattern.parse(text)
    assert says in str(err.value)


@pytest.mark.parametrize("text", ["{}/x", "**/{a}", "{a}/{a}", "x{a}"])
def test_a_bad_pattern_stops_the_settings_naming_the_variable(text: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(path_metadata=text)
    assert "INGEST_PATH_METADATA" in str(err.value)


def test_an_empty_setting_means_no_pattern() -> None:
    assert load_settings(path_metadata="  ").ingest.path_metadata is None
    ok = load_settings(path_metadata=SITE_CAMERA).ingest
    assert ok.path_metadata == SITE_CAMERA
    assert ok.path_metadata_mismatch is PathMismatch.FAIL


def test_parse_keeps_segments_in_order() -> None:
    pattern = PathPattern.parse("/{site_id}/cams/*/{camera_id}/**/")
    assert pattern.text == "{site_id}/cams/*/{camera_id}/**"
    assert [s.kind for s in pattern.segments] == [
        Kind.KEY,
        Kind.LITERAL,
        Kind.ANY,
        Kind.KEY,
        Kind.REST,
    ]
    assert pattern.keys == ("site_id", "camera_id")


def test_the_keys_refused_are_exactly_the_fields_a_string_cannot_fill() -> None:
    """NOT_TEXT_KEYS (core, which may not import the API models) matches the models."""
    not_text = {
        name
        for name, info in SecurityMetadata.model_fields.items()
        if set(typing.get_args(info.annotation)) - {type(None)} != {str}
    }
    assert not_text | {"index"} == NOT_TEXT_KEYS


# --- matching ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "rel_dir", "expected"),
    [
        (SITE_CAMERA, "lot-7/cam-3/2026-11-27", {"site_id": "lot-7", "camera_id": "cam-3"}),
        (SITE_CAMERA, "lot-7/cam-3", None),  # too shallow
        (SITE_CAMERA, "lot-7/cam-3/day/extra", None),  # too deep
        (SITE_CAMERA, "", None),
        ("{site_id}", "", None),
        ("{site_id}", ".", None),
        ("{site_id}", "lot-7", {"site_id": "lot-7"}),
        ("{site_id}/**", "lot-7", {"site_id": "lot-7"}),  # ** may be no folder at all
        ("{site_id}/**", "lot-7/a/b/c", {"site_id": "lot-7"}),
        ("{site_id}/**", "", None),
        ("**", "", {}),
        ("**", "a/b", {}),
        ("*/*", "a/b", {}),
        ("*/*", "a", None),
        ("sites/{site_id}/*", "sites/lot-7/x", {"site_id": "lot-7"}),
        ("sites/{site_id}/*", "Sites/lot-7/x", None),  # literals are exact, case too
        ("sites/{site_id}/*", "site/lot-7/x", None),
        ("{org_id}/{site_id}/{camera_id}", "acme/lot 7/cam #3/d", None),
        (
            "{org_id}/{site_id}/{camera_id}/*",
            "acme/lot 7/cam #3/d",
            {
                "org_id": "acme",
                "site_id": "lot 7",
                "camera_id": "cam #3",
            },
        ),
        ("{a}/{b}", "./x/y", {"a": "x", "b": "y"}),
        ("{a}", ".hidden", {"a": ".hidden"}),
    ],
)
def test_match(pattern: str, rel_dir: str, expected: dict[str, str] | None) -> None:
    parsed = PathPattern.parse(pattern)
    assert parsed.match(rel_dir.replace("/", os.sep)) == expected
    assert (parsed.why_not(rel_dir) is None) == (expected is not None)


def test_why_not_says_what_does_not_fit() -> None:
    pattern = PathPattern.parse("sites/{site_id}/*")
    assert pattern.why_not("lot-7") == "1 folder deep, the pattern wants 3"
    assert pattern.why_not("") == "0 folders deep, the pattern wants 3"
    assert pattern.why_not("other/lot-7/x") == "folder 1 is 'other', the pattern wants 'sites'"
    assert (
        PathPattern.parse("{a}/{b}/**").why_not("x") == "1 folder deep, the pattern wants 2 or more"
    )


def test_a_name_that_is_not_utf8_is_kept_by_the_percent_rule() -> None:
    name = os.fsdecode(b"caf\xe9")
    values = PathPattern.parse("{site_id}").match(name)
    assert values == {"site_id": "caf%E9"}


folder_bytes = st.binary(min_size=1, max_size=40).filter(
    lambda b: b"/" not in b and b"\x00" not in b and b not in (b".", b"..")
)


@given(st.lists(folder_bytes, min_size=1, max_size=6))
def test_any_folder_names_give_storable_sendable_values(names: list[bytes]) -> None:
    decoded = [os.fsdecode(n) for n in names]
    pattern = PathPattern.parse("/".join(f"{{k{i}}}" for i in range(len(decoded))))
    values = pattern.match(os.sep.join(decoded))
    assert values is not None
    assert list(values) == [f"k{i}" for i in range(len(decoded))]
    for name, value in zip(decoded, values.values(), strict=True):
        value.encode("utf-8")  # no lone surrogate: storable and sendable
        assert value == shown(name)
        try:
            assert value == bytes(name, "utf-8", "surrogateescape").decode("utf-8")
        except UnicodeDecodeError:
            assert "%" in value  # a byte that is not UTF-8 is shown as %XX
    json.dumps(values, ensure_ascii=False).encode("utf-8")
    # Deeper than the pattern: no fit; under a final `**`: the same values.
    assert pattern.match(os.sep.join([*decoded, "x"])) is None
    rest = PathPattern.parse(pattern.text + "/**")
    assert rest.match(os.sep.join([*decoded, "x", "y"])) == values


@given(st.text(max_size=60))
def test_parse_either_gives_a_pattern_or_a_value_error(text: str) -> None:
    try:
        pattern = PathPattern.parse(text)
    except ValueError:
        return
    pattern.match("a/b/c")


# --- the mismatch rule -----------------------------------------------------------


def test_fail_rule_raises_path_mismatch_naming_pattern_and_folders() -> None:
    rules = FolderMetadata.parse(SITE_CAMERA, PathMismatch.FAIL)
    assert rules.values("lot-7/cam-3/d") == {"site_id": "lot-7", "camera_id": "cam-3"}
    with pytest.raises(FileRejected) as err:
        rules.values("lot-7")
    assert err.value.reason == Reason.PATH_MISMATCH
    message = err.value.message
    assert SITE_CAMERA in message and "'lot-7'" in message and "INGEST_PATH_METADATA" in message


def test_omit_rule_gives_no_folder_keys() -> None:
    rules = FolderMetadata.parse(SITE_CAMERA, PathMismatch.OMIT)
    assert rules.values("lot-7") == {}
    assert FolderMetadata.parse(None, PathMismatch.FAIL).values("any/where/at/all") == {}


def _describe(root: Path, rel: str, rules: MetadataRules) -> Any:
    return describe(
        str(root / rel),
        rel_path=rel,
        source_root=str(root),
        origin=Origin.SCAN,
        seen_at=0.0,
        sidecar_path=None,
        defaults=None,
        max_image_bytes=10_000_000,
        rules=rules,
    )


def test_describe_fails_a_misfit_alone_or_sends_it_without_the_keys(tmp_path: Path) -> None:
    write_image(tmp_path / "lot-7" / "cam-3" / "day" / "ok.jpg", seed=1)
    write_image(tmp_path / "lot-7" / "stray.jpg", seed=2)
    fail = MetadataRules(FolderMetadata.parse(SITE_CAMERA, PathMismatch.FAIL))
    omit = MetadataRules(FolderMetadata.parse(SITE_CAMERA, PathMismatch.OMIT))
    good = _describe(tmp_path, "lot-7/cam-3/day/ok.jpg", fail)
    assert good.reason is None
    assert good.sidecar == {"site_id": "lot-7", "camera_id": "cam-3"}
    bad = _describe(tmp_path, "lot-7/stray.jpg", fail)
    assert bad.reason == Reason.PATH_MISMATCH and bad.sha256 is None
    assert SITE_CAMERA in (bad.message or "") and "lot-7" in (bad.message or "")
    sent = _describe(tmp_path, "lot-7/stray.jpg", omit)
    assert sent.reason is None and sent.sha256 is not None and sent.sidecar is None


def test_rules_from_settings_are_parsed_once() -> None:
    settings = load_settings(path_metadata=SITE_CAMERA, exif_timezone="+02:00").ingest
    first = MetadataRules.from_settings(settings)
    assert first is MetadataRules.from_settings(settings)
    assert first.folders.pattern == PathPattern.parse(SITE_CAMERA)


# --- through the real watcher -------------------------------------------------------


def test_the_watcher_records_folder_values_and_the_exif_time(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings(path_metadata=SITE_CAMERA)
    inbox = settings.inbox
    watcher = Watcher(settings, ledger, no_enqueue)
    with running(watcher):
        jpeg_with_exif(inbox / "lot-7" / "cam-3" / "2026-11-27" / "a.jpg", "2026:11:27 14:03:11")
        write_image(inbox / "lot-7" / "stray.jpg", seed=7)
        wait_for(lambda: watcher.recorder.totals.recorded >= 2)
    rows = files_by_path(ledger)
    good = rows["lot-7/cam-3/2026-11-27/a.jpg"]
    assert good.state == FileState.QUEUED
    assert good.sidecar == {
        "site_id": "lot-7",
        "camera_id": "cam-3",
        "recorded_timestamp_utc": NOV_27_1403_UTC,
    }
    stray = rows["lot-7/stray.jpg"]
    assert (stray.state, stray.reason) == (FileState.FAILED, Reason.PATH_MISMATCH)
    assert SITE_CAMERA in (stray.message or "") and "'lot-7'" in (stray.message or "")
    record = json.loads((settings.failed_path / "lot-7" / "stray.jpg.error.json").read_text())
    assert record["reason"] == "path_mismatch"


def test_a_backfill_reads_folders_below_the_scanned_root(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, tmp_path: Path
) -> None:
    settings = fast_settings(
        path_metadata=SITE_CAMERA, path_metadata_mismatch="omit", exif_timezone="+01:00"
    ).model_copy(update={"min_file_age": 0.0})
    root = tmp_path / "archive"
    jpeg_with_exif(root / "lot-7" / "cam-3" / "2026-11-27" / "a.jpg", "2026:11:27 14:03:11")
    write_image(root / "loose.jpg", seed=8)
    summary = backfill(settings, ledger, root, no_enqueue)
    assert (summary.recorded, summary.failed) == (2, 0)
    rows = files_by_path(ledger)
    assert rows["lot-7/cam-3/2026-11-27/a.jpg"].sidecar == {
        "site_id": "lot-7",
        "camera_id": "cam-3",
        "recorded_timestamp_utc": NOV_27_1403_UTC - 3600,
    }
    loose = rows["loose.jpg"]
    assert (loose.state, loose.sidecar) == (FileState.QUEUED, None)  # omit: sent without keys
