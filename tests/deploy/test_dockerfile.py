"""deploy/Dockerfile, read as text: multi-stage, slim, non-root, a healthcheck,
`reka-ingest` as the entry point, the PostgreSQL driver installed."""

from __future__ import annotations

import re

from tests.deploy.support import DEPLOY

TEXT = (DEPLOY / "Dockerfile").read_text()
INSTRUCTIONS = [
    line.strip()
    for line in re.sub(r"\\\n", " ", TEXT).splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]


def named(keyword: str) -> list[str]:
    return [i for i in INSTRUCTIONS if i.split()[0] == keyword]


def test_multi_stage_on_python_slim() -> None:
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in INSTRUCTIONS
    stages = named("FROM")
    assert stages == ["FROM ${PYTHON_IMAGE} AS build", "FROM ${PYTHON_IMAGE} AS runtime"]


def test_the_wheel_is_built_in_one_stage_and_installed_in_the_other() -> None:
    build, runtime = re.split(r"^FROM .* AS runtime$", TEXT, flags=re.M)
    assert "pip wheel" in build and '".[postgres]"' in build
    assert "build-essential" in build and "build-essential" not in runtime
    assert '--no-index --find-links /wheels "reka-ingest[postgres]"' in runtime


def test_runs_as_a_non_root_user() -> None:
    (user,) = named("USER")
    uid = user.split()[1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000
    # The last USER comes after everything that needs root.
    assert INSTRUCTIONS.index(user) > max(INSTRUCTIONS.index(i) for i in named("RUN"))


def test_healthcheck_and_entrypoint() -> None:
    (health,) = named("HEALTHCHECK")
    assert health.endswith('CMD ["reka-ingest", "health"]')
    assert named("ENTRYPOINT") == ['ENTRYPOINT ["reka-ingest"]']
    assert named("CMD") == ['CMD ["worker"]']
