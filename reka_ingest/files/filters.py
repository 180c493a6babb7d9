"""INGEST_INCLUDE / INGEST_EXCLUDE: which paths the service takes, by rclone's rules.

Pure: no file system, no ledger. Paths are relative to the inbox (or the scanned
root), in their POSIX form, as `os.fsdecode` gives them (bytes that are not
UTF-8 are lone surrogates: they match `?`, `*` and themselves, never crash).
The glob syntax and its translation are in `reka_ingest.core.globs` (each glob
compiled once, when the filter is made; the settings check them at start).

The rules, as an rclone filter list: every exclude first (`- glob`), then every
include (`+ glob`), then, when there is any include, `- **`. The first rule a
path matches decides, so an exclude wins over an include, and with includes a
path none of them matches is left out. (rclone puts `--include` before
`--exclude` when both are given and advises against mixing them; here the order
is fixed, as the settings say.)

A folder can be skipped without walking it when an exclude glob ends in `/**`
(or `/`, or is `**`): `pruned_by(folder)` names the rule, so a scan records the
folder once instead of every file below it. That is sound: a folder the glob's
head matches has every path below it matched by the glob, and excludes win.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from reka_ingest.core.globs import GlobError, compile_glob, glob_to_regex

if TYPE_CHECKING:
    import re

    from reka_ingest.core.settings import IngestSettings

INCLUDE_SETTING: Final = "INGEST_INCLUDE"
EXCLUDE_SETTING: Final = "INGEST_EXCLUDE"


def _folder_glob(glob: str) -> str | None:
    """For a glob that takes everything below some folders (`dir/**`, `**`), the glob
    of those folders; None for any other glob."""
    if glob.endswith("/"):
        glob += "**"
    if glob in ("**", "/**"):
        return "**"  # every folder
    if not glob.endswith("/**"):
        return None
    head = glob[:-3]
    if head in ("", "/"):
        return "**"
    try:
        glob_to_regex(head)
    except GlobError:
        return None  # `a\/**`, `{a,b/**}`: not a folder's glob; judged file by file
    return head


@dataclass(frozen=True, slots=True)
class Rule:
    setting: str  # INGEST_INCLUDE or INGEST_EXCLUDE
    glob: str
    regex: re.Pattern[str]
    # Folders everything below which this (exclude) rule takes, when it can say.
    folders: re.Pattern[str] | None = None

    def __str__(self) -> str:
        return f'{self.setting} "{self.glob}"'


def _rules(setting: str, globs: Sequence[str]) -> tuple[Rule, ...]:
    rules = []
    for glob in globs:
        folder = _folder_glob(glob) if setting == EXCLUDE_SETTING else None
        regex = compile_glob(glob)
        folders = compile_glob(folder) if folder is not None else None
        rules.append(Rule(setting=setting, glob=glob, regex=regex, folders=folders))
    return tuple(rules)


def _posix(rel_path: str) -> str:
    return rel_path if os.sep == "/" else rel_path.replace(os.sep, "/")


class PathFilter:
    """The include and exclude rules, compiled once. `excluded_by` is the one question."""

    def __init__(self, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> None:
        self.includes = _rules(INCLUDE_SETTING, include)
        self.excludes = _rules(EXCLUDE_SETTING, exclude)
        self._prunes = tuple(r for r in self.excludes if r.folders is not None)
        globs = ", ".join(f'"{r.glob}"' for r in self.includes)
        self._not_included = f"{INCLUDE_SETTING} (matches none of {globs})"

    @classmethod
    def from_settings(cls, ingest: IngestSettings) -> PathFilter:
        return cls(include=ingest.include, exclude=ingest.exclude)

    @property
    def active(self) -> bool:
        """Whether any rule is set (without rules every path is taken)."""
        return bool(self.includes or self.excludes)

    @property
    def prunes(self) -> bool:
        """Whether some folders can be left out whole (`pruned_by` can say yes)."""
        return bool(self._prunes)

    def excluded_by(self, rel_path: str) -> str | None:
        """The rule that leaves this file out (`INGEST_EXCLUDE "**/*.tmp"`), or None
        when it is taken."""
        path = _posix(rel_path)
        for rule in self.excludes:
            if rule.regex.search(path):
                return str(rule)
        if not self.includes:
            return None
        for rule in self.includes:
            if rule.regex.search(path):
                return None
        return self._not_included

    def pruned_by(self, rel_folder: str) -> str | None:
        """The exclude rule that leaves out everything below this folder (so it need not
        be walked), or None (its files are judged one by one)."""
        folder = _posix(rel_folder).rstrip("/")
        if not folder:
            return None  # the root itself is always walked
        for rule in self._prunes:
            if rule.folders is not None and rule.folders.search(folder):
                return str(rule)
        return None

    def pruned_folder(self, rel_path: str) -> tuple[str, str] | None:
        """The top folder on this file's way that `pruned_by` leaves out, with the rule:
        (folder, rule), or None. A walk never enters that folder, so an event for a
        file below it is that folder's business."""
        if not self._prunes:
            return None
        parts = _posix(rel_path).split("/")[:-1]
        for n in range(1, len(parts) + 1):
            folder = "/".join(parts[:n])
            rule = self.pruned_by(folder)
            if rule is not None:
                return folder, rule
        return None
