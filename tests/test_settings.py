"""Settings are read once and checked at start: a wrong value stops the command
with a message naming the variable; `reka-ingest config` never shows a secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from reka_ingest.core.errors import SettingsError
from reka_ingest.core.settings import (
    _SECRET_FIELDS,
    IngestSettings,
    RekaSettings,
    load_settings,
    mask_url,
)

KEY = "sk-settings-test-93jd0a"
PASSWORD = "redis-pw-x7q"  # noqa: S105 - a test value the output must never show


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "REKA_"))}
    return subprocess.run(
        [sys.executable, "-m", "reka_ingest.cli", *args],
        env=clean | env,
        check=False,  # the exit code is what some tests assert
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("INGEST_BATCH_MAX_FILES", "many"),
        ("INGEST_BATCH_MAX_FILES", "101"),  # the API takes at most 100 images a request
        ("INGEST_OBSERVER", "carrier-pigeon"),
        ("REKA_API_BASE_URL", "ftp://example"),
        ("REKA_READ_TIMEOUT", "-1"),
        ("INGEST_LOG_LEVEL", "LOUD"),
    ],
)
def test_a_wrong_value_names_its_variable(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_a_wrong_value_stops_the_command_with_exit_2() -> None:
    result = _cli("status", INGEST_SCAN_INTERVAL="soon")
    assert result.returncode == 2
    assert "INGEST_SCAN_INTERVAL" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_secret_in_a_wrong_value_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGEST_FLOWER_BASIC_AUTH", "admin:" + PASSWORD)
    monkeypatch.setenv("INGEST_FLOWER_PORT", "0")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert PASSWORD not in str(info.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("INGEST_WEB_BASIC_AUTH", f"admin{PASSWORD}"),  # no colon: refused
        ("INGEST_NOTIFY_URL", f"ftp://hooks.example.com/{PASSWORD}"),  # not http(s): refused
        ("INGEST_FLOWER_BASIC_AUTH", f"admin{PASSWORD}"),  # no colon: refused, as the web's
        ("INGEST_REDIS_URL", f"http://:{PASSWORD}@127.0.0.1:6379/0"),  # not Redis
        ("INGEST_REDIS_URL", f"redis//:{PASSWORD}@127.0.0.1:6379"),  # no scheme at all
    ],
)
def test_a_refused_secret_is_named_but_never_echoed(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert variable in str(info.value)
    assert PASSWORD not in str(info.value)


# URLs that are public by nature: the API's address holds no credential.
PUBLIC_URLS = {"api_base_url"}


def test_every_setting_that_may_hold_a_secret_is_typed_as_one() -> None:
    """A secret is masked by its type (`SecretStr`): in `config`, in a refused value's
    message, in a repr. A key, a password, basic auth, a token, and a URL (a password
    or a token may be in it: a database's, a broker's, a webhook's) must have that
    type, and a description that says it may hold one too."""
    for group in (RekaSettings, IngestSettings):
        for name, info in group.model_fields.items():
            said = (info.description or "").lower()
            named = any(w in name for w in ("key", "password", "token", "secret", "auth"))
            url = name.endswith("_url") and name not in PUBLIC_URLS
            described = any(w in said for w in ("password", "token", "secret"))
            if named or url or described:
                assert name in _SECRET_FIELDS, f"{group.__name__}.{name}: {said}"


def test_config_masks_secrets() -> None:
    result = _cli(
        "config",
        "--json",
        REKA_API_KEY=KEY,
        INGEST_REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:6399/0",
        INGEST_FLOWER_BASIC_AUTH=f"admin:{PASSWORD}",
        INGEST_DATABASE_URL=f"postgresql+psycopg://ingest:{PASSWORD}@db.internal:5432/ledger",
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["REKA"]["REKA_API_KEY"] == "***"
    assert shown["INGEST"]["INGEST_REDIS_URL"] == "redis://:***@127.0.0.1:6399/0"
    assert (
        shown["INGEST"]["INGEST_DATABASE_URL"]
        == "postgresql+psycopg://ingest:***@db.internal:5432/ledger"
    )
    assert KEY not in result.stdout + result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_mask_url_keeps_everything_but_the_password() -> None:
    assert mask_url("redis://user:pw@host:6379/2") == "redis://user:***@host:6379/2"
    assert mask_url("redis://host:6379/0") == "redis://host:6379/0"


def _float_settings() -> list[str]:
    return [
        f"{group.model_config.get('env_prefix', '')}{name}".upper()
        for group in (RekaSettings, IngestSettings)
        for name, info in group.model_fields.items()
        if info.annotation in (float, float | None)
    ]


@pytest.mark.parametrize("variable", _float_settings())
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity"])
def test_no_number_of_seconds_may_be_infinite_or_nan(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lease of `inf` never ends, a NaN deadline is never met: every float setting
    refuses both, naming its variable."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_the_float_settings_are_found() -> None:
    assert {"INGEST_BATCH_LEASE", "INGEST_INDEX_DEADLINE", "REKA_READ_TIMEOUT"} <= set(
        _float_settings()
    )
