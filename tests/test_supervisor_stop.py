"""The supervisor stops its children a stop group at a time: the members of a group
are signalled together, and the next group only once every member has exited."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from reka_ingest.cli.processes import Supervisor

# A child that notes when SIGTERM came, takes `linger` seconds to exit, then notes that.
CHILD = """
import signal, sys, time
out, linger = sys.argv[1], float(sys.argv[2])
def on_term(*_):
    with open(out, "a") as f:
        f.write(f"term {time.time()}\\n")
    time.sleep(linger)
    with open(out, "a") as f:
        f.write(f"exit {time.time()}\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
open(out + ".ready", "w").close()
while True:
    time.sleep(0.05)
"""


def _times(path: Path) -> dict[str, float]:
    return {k: float(v) for k, v in (line.split() for line in path.read_text().splitlines())}


def test_a_group_is_signalled_together_and_the_next_waits_for_all_of_it(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "logs")
    names = {"back": "back", "worker": "worker", "front-1": "front", "front-2": "front"}
    lingers = {"back": 0.0, "worker": 0.2, "front-1": 1.0, "front-2": 0.3}
    for name, group in names.items():
        argv = [sys.executable, "-c", CHILD, str(tmp_path / name), str(lingers[name])]
        supervisor.start(name, argv, {}, stop_group=group)
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"{n}.ready").exists() for n in names):
        assert time.monotonic() < deadline, "the children did not start"
        time.sleep(0.05)

    supervisor.stop_all(timeout=30)

    t = {name: _times(tmp_path / name) for name in names}
    # The front group: both signalled before the slower one could have exited.
    assert abs(t["front-1"]["term"] - t["front-2"]["term"]) < 0.5
    front_done = max(t["front-1"]["exit"], t["front-2"]["exit"])
    # The worker, alone, only after the whole front group exited; then the back.
    assert t["worker"]["term"] >= front_done
    assert t["back"]["term"] >= t["worker"]["exit"]
    assert supervisor.children == []


def test_a_child_that_ignores_sigterm_is_killed_at_its_groups_deadline(tmp_path: Path) -> None:
    supervisor = Supervisor(None)
    ready = tmp_path / "ready"
    stubborn = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "open(sys.argv[1], 'w').close()\n"
        "time.sleep(60)"
    )
    child = supervisor.start(
        "stubborn", [sys.executable, "-c", stubborn, str(ready)], {}, stop_group="g"
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert time.monotonic() < deadline, "the child did not start"
        time.sleep(0.05)
    supervisor.stop_all(timeout=1.0)
    assert child.process.returncode == -signal.SIGKILL
