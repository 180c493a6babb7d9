"""Peak memory and CPU time of the processes a scenario started, from /proc.

`Sampler` is given named root pids (the processes we started); every
`interval` seconds it also finds their descendants (Celery's pool children)
and keeps, per pid, the peak resident set (`VmHWM`, the kernel's own
high-water mark, so a spike between two samples is not missed) and the last
CPU time seen (`utime + stime` from /proc/PID/stat). `mark()` snapshots the
CPU times, so a scenario measures only its own window, not imports at start.

`Profiler` (BENCH_PROFILE=DIR): py-spy attached by pid to named processes and their
children, each writing collapsed stacks (`DIR/LABEL.txt`, py-spy's raw format) when
stopped; it slows what it watches, so a profiled run's timings are not comparable.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psutil

CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
SAMPLE_SECONDS: Final = 0.25
MB: Final = 1024 * 1024


def peak_rss(pid: int) -> int | None:
    """VmHWM of `pid` in bytes (None when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of `pid` in seconds (None when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of stat(5)


@dataclass
class Seen:
    label: str
    peak_rss: int = 0
    cpu: float = 0.0
    cpu_at_mark: float | None = None


class Sampler:
    def __init__(self, roots: dict[str, int], interval: float = SAMPLE_SECONDS) -> None:
        self.roots = dict(roots)
        self.interval = interval
        self.seen: dict[int, Seen] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def add(self, label: str, pid: int) -> None:
        with self._lock:
            self.roots[label] = pid

    def start(self) -> Sampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def _tree(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for label, pid in list(self.roots.items()):
            out.append((label, pid))
            try:
                children = psutil.Process(pid).children(recursive=True)
            except psutil.Error:
                continue
            for n, child in enumerate(sorted(children, key=lambda p: p.pid), start=1):
                out.append((f"{label}/child-{n}", child.pid))
        return out

    def sample(self) -> None:
        with self._lock:
            for label, pid in self._tree():
                rss, cpu = peak_rss(pid), cpu_seconds(pid)
                if rss is None or cpu is None:
                    continue
                seen = self.seen.setdefault(pid, Seen(label))
                seen.peak_rss = max(seen.peak_rss, rss)
                seen.cpu = cpu

    def mark(self) -> None:
        """Start the CPU window now: later figures count only what runs from here."""
        self.sample()
        with self._lock:
            for seen in self.seen.values():
                seen.cpu_at_mark = seen.cpu

    def peak_rss_mb(self) -> dict[str, float]:
        with self._lock:
            return {s.label: round(s.peak_rss / MB, 1) for s in self._ordered()}

    def cpu_window(self) -> dict[str, float]:
        """CPU seconds per process since `mark()` (all of it for a process born after)."""
        with self._lock:
            return {s.label: round(s.cpu - (s.cpu_at_mark or 0.0), 3) for s in self._ordered()}

    def _ordered(self) -> list[Seen]:
        return sorted(self.seen.values(), key=lambda s: s.label)


class Profiler:
    """`py-spy record --subprocesses --pid PID` per named process, stopped by SIGINT."""

    def __init__(self, out: Path, roots: dict[str, int], rate: int = 250) -> None:
        found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.procs = [
            subprocess.Popen(
                [
                    *(found, "record", "--subprocesses", "--nonblocking", "--format", "raw"),
                    *("--rate", str(rate), "--pid", str(pid), "-o", str(out / f"{label}.txt")),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
            for label, pid in roots.items()
        ]

    @classmethod
    def from_env(cls, roots: dict[str, int]) -> Profiler | None:
        where = os.environ.get("BENCH_PROFILE")
        return cls(Path(where), roots) if where else None

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
