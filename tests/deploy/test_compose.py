"""docker-compose.yml, read as data (no Docker engine here): every property the
operations issue asks of it, one test each."""

from __future__ import annotations

import re
from typing import Any

import pytest

from reka_ingest.core.settings import IngestSettings, RekaSettings
from tests.deploy.support import DEPLOY, ROOT, load_yaml

LONG_RUNNING = ("redis", "postgres", "worker", "beat", "watcher", "flower", "metrics", "standin")
INGEST_ROLES = ("migrate", "worker", "beat", "watcher", "flower", "metrics", "standin")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(ROOT / "docker-compose.yml")
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    svc: dict[str, dict[str, Any]] = compose["services"]
    return svc


def command_text(service: dict[str, Any]) -> str:
    cmd = service.get("command", "")
    return " ".join(cmd) if isinstance(cmd, list) else str(cmd)


def test_every_piece_is_there(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {*LONG_RUNNING, "migrate"}


def test_redis_appends_never_evicts_and_needs_a_password_from_the_env(
    services: dict[str, dict[str, Any]],
) -> None:
    redis = services["redis"]
    cmd = command_text(redis)
    assert "appendonly yes" in cmd
    assert "maxmemory-policy noeviction" in cmd
    assert re.search(r"requirepass %s.*\$\$REDIS_PASSWORD", cmd, re.S)
    assert "${REDIS_PASSWORD:?" in redis["environment"]["REDIS_PASSWORD"]
    # Not in redis-server's argv: written to a config file it reads.
    assert "exec redis-server /tmp/redis.conf" in cmd
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_postgres_is_the_ledger(services: dict[str, dict[str, Any]]) -> None:
    pg = services["postgres"]
    assert pg["image"].startswith("postgres:")
    assert "${POSTGRES_PASSWORD:?" in pg["environment"]["POSTGRES_PASSWORD"]
    for role in ("worker", "beat", "watcher", "migrate"):
        url = services[role]["environment"]["INGEST_DATABASE_URL"]
        assert url.startswith("postgresql+psycopg://ingest:${POSTGRES_PASSWORD")
        assert "@postgres:5432/ingest" in url


def test_the_ingest_roles_share_one_image_and_the_right_commands(
    services: dict[str, dict[str, Any]],
) -> None:
    commands = {role: services[role]["command"][0] for role in INGEST_ROLES}
    assert commands == {
        "migrate": "migrate",
        "worker": "worker",
        "beat": "beat",
        "watcher": "watch",
        "flower": "flower",
        "metrics": "metrics",
        "standin": "fake-api",
    }
    for role in INGEST_ROLES:
        assert services[role]["image"] == "reka-ingest:latest"
        assert services[role]["build"]["dockerfile"] == "deploy/Dockerfile"


def test_migration_is_one_shot_and_everything_waits_for_it(
    services: dict[str, dict[str, Any]],
) -> None:
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for role in ("worker", "beat", "watcher", "flower", "metrics"):
        deps = services[role]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["postgres"]["condition"] == "service_healthy"


def test_workers_scale(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    # --scale worker=N needs no fixed name, no published port, no fixed replica count.
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "replicas" not in worker.get("deploy", {})
    assert int(worker["stop_grace_period"].rstrip("s")) >= RekaSettings().read_timeout


def test_exactly_one_beat(services: dict[str, dict[str, Any]]) -> None:
    assert services["beat"]["deploy"]["replicas"] == 1


def test_the_watcher_shares_the_inbox_with_the_workers(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    def data_volume(role: str) -> str:
        (mount,) = [v for v in services[role]["volumes"] if v.endswith(":/data")]
        return str(mount.split(":")[0])

    assert data_volume("watcher") == data_volume("worker") == "ingest-data"
    assert "ingest-data" in compose["volumes"]
    for role in ("watcher", "worker"):
        env = services[role]["environment"]
        # Inbox and work area on one volume, so a claim is an atomic rename.
        assert env["INGEST_INBOX"].startswith("/data/")
        assert env["INGEST_DATA_DIR"].startswith("/data/")


def test_flower_has_basic_auth_from_the_env_and_persistent_state(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    flower = services["flower"]
    env = flower["environment"]
    assert env["INGEST_FLOWER_HOST"] == "0.0.0.0"  # noqa: S104 - checks the config, binds nothing
    assert env["INGEST_FLOWER_BASIC_AUTH"].startswith("${INGEST_FLOWER_BASIC_AUTH:?")
    state_dir = env["INGEST_DATA_DIR"]  # flower_argv keeps flower.db in DATA_DIR
    assert f"flower-state:{state_dir}" in flower["volumes"]
    assert "flower-state" in compose["volumes"]
    assert flower["ports"] == ["127.0.0.1:5555:5555"]


def test_the_stand_in_is_only_in_the_dev_profile(services: dict[str, dict[str, Any]]) -> None:
    assert services["standin"]["profiles"] == ["dev"]
    for name, svc in services.items():
        if name != "standin":
            assert "profiles" not in svc, name


@pytest.mark.parametrize("name", (*LONG_RUNNING, "migrate"))
def test_each_service_has_a_healthcheck(services: dict[str, dict[str, Any]], name: str) -> None:
    check = services[name]["healthcheck"]
    assert not check.get("disable", False)
    assert check["test"][0] in ("CMD", "CMD-SHELL")
    if name not in ("redis", "postgres"):
        assert check["test"][1:3] == ["reka-ingest", "health"]


def test_secrets_come_from_the_env_file(services: dict[str, dict[str, Any]]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    example = (DEPLOY / "env.example").read_text()
    for role in INGEST_ROLES:
        (env_file,) = services[role]["env_file"]
        assert env_file == {"path": "deploy/.env", "required": True}
    # Every ${VAR} the compose file needs is explained in the example env file ...
    needed = set(re.findall(r"\$\{(\w+)", text))
    assert needed == {
        "REDIS_PASSWORD",
        "POSTGRES_PASSWORD",
        "INGEST_FLOWER_BASIC_AUTH",
        "REKA_API_KEY",
    }
    defined = set(re.findall(r"^#?\s*(\w+)=", example, re.M))
    assert needed <= defined
    # ... and no secret is written into the compose file itself.
    for name, svc in services.items():
        for var, val in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|API_KEY|BASIC_AUTH|API_KEYS", var):
                assert str(val).startswith("${"), (name, var)
            if re.search(r"_URL$", var) and "@" in str(val):
                assert re.match(r"^\w[\w+]*://[^:]*:\$\{\w+:\?[^}]*\}@", str(val)), (name, var)


def test_every_variable_in_the_example_env_is_a_real_setting() -> None:
    example = (DEPLOY / "env.example").read_text()
    known = {f"REKA_{n.upper()}" for n in RekaSettings.model_fields} | {
        f"INGEST_{n.upper()}" for n in IngestSettings.model_fields
    }
    compose_only = {"REDIS_PASSWORD", "POSTGRES_PASSWORD"}
    for name in re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, re.M):
        assert name in known | compose_only, name


def test_the_dockerignore_keeps_secrets_and_state_out() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("**") :].count("**") == 1  # deny by default
    for kept in ("!worker/**", "!scheduler/**", "!cli/**", "!standin/**", "!pyproject.toml"):
        assert kept in lines
    for secret in ("**/.env", "deploy/.env", "var/", "inbox/"):
        assert secret in lines
