"""Children that end when their parent ends, however it ends (Linux).

`die_with_parent()` returns a `preexec_fn` for `subprocess.Popen` that sets the
kernel's parent-death signal (prctl PR_SET_PDEATHSIG) to SIGTERM: when the
process that started the child dies, even by SIGKILL or a closed terminal, the
kernel sends the child SIGTERM, and the child stops as it would on Ctrl-C. The
setting survives the child's exec (not a set-user-ID one).

Two limits, both kernel rules: the "parent" is the *thread* that forked, so
start such children from a thread that lives as long as they should (the main
thread); and on other systems there is no such signal (`None` is returned and
the caller's pid file is the only safety net).

The libc function is looked up here, in the parent: the preexec function runs
between fork and exec, where loading a library or importing is not safe.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1
_PARENT_GONE_EXIT = 1


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """A Popen `preexec_fn` that makes the child get `sig` when this process dies."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()
    signum = int(sig)

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        # The parent may have died between fork and prctl: then no signal comes.
        if os.getppid() != parent:
            os._exit(_PARENT_GONE_EXIT)

    return preexec
