"""A failed file fixed and dropped again supersedes its failed row: the old row
stays in history (reason, message, `superseded_by`) and leaves the failed count;
`retry` no longer takes it. "The same file" is the same relative path in the same
source root; a row whose failure is not settled yet (not in failed/) is left."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, update

from reka_ingest.core.states import FileState, Origin, Reason
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.intake import NewFile, _failed_by_path, failed_file, record_files
from reka_ingest.ledger.queries import list_files, summary
from reka_ingest.ledger.retry import failed_files
from reka_ingest.ledger.schema import File

NOW = 1_000.0


def _new(path: str, work: str, sha: str, root: str = "/inbox") -> NewFile:
    return NewFile(
        path=path,
        source_root=root,
        work_path=work,
        origin=Origin.EVENT,
        size=10,
        mtime=NOW,
        sha256=sha,
        seen_at=NOW,
    )


def _fail(
    ledger: Ledger, path: str, work: str, *, settled: bool = True, root: str = "/inbox"
) -> int:
    bad = failed_file(
        path=path,
        source_root=root,
        work_path=work,
        origin=Origin.EVENT,
        seen_at=NOW,
        reason=Reason.NOT_AN_IMAGE,
        message="Pillow cannot read it",
    )
    (rec,) = record_files(ledger, [bad], now=NOW)
    if settled:  # the outbox moved it to failed/ beside its reason file
        with ledger.write() as s:
            s.execute(
                update(File)
                .where(File.id == rec.file_id)
                .values(final_path=f"/var/failed/{path}.error.json")
            )
    return rec.file_id


def test_a_redropped_file_supersedes_its_failed_row(ledger: Ledger) -> None:
    old = _fail(ledger, "cam1/a.jpg", "/work/c1/a.jpg")
    # The same name under another source root is another file.
    other_root = _fail(ledger, "cam1/a.jpg", "/work/c9/a.jpg", root="/elsewhere")
    unsettled = _fail(ledger, "cam1/b.jpg", "/work/c2/b.jpg", settled=False)
    assert summary(ledger, now=NOW).files["failed"] == 3

    new = record_files(
        ledger,
        [
            _new("cam1/a.jpg", "/work/c3/a.jpg", "f" * 64),
            _new("cam1/b.jpg", "/work/c4/b.jpg", "e" * 64),
        ],
        now=NOW + 5,
    )
    rows = {f.id: f for f in list_files(ledger)}
    assert rows[old].state == FileState.SUPERSEDED
    assert rows[old].superseded_by == new[0].file_id
    assert rows[old].reason == Reason.NOT_AN_IMAGE and rows[old].message  # history kept
    assert rows[other_root].state == FileState.FAILED  # another source root
    assert rows[unsettled].state == FileState.FAILED  # not settled yet: left to finish
    counts = summary(ledger, now=NOW + 5).files
    assert counts["failed"] == 2 and counts["superseded"] == 1 and counts["queued"] == 2
    assert old not in {f.id for f in failed_files(ledger)}  # retry no longer takes it


def test_a_redropped_file_that_fails_again_counts_once(ledger: Ledger) -> None:
    first = _fail(ledger, "x.jpg", "/work/c1/x.jpg")
    second = _fail(ledger, "x.jpg", "/work/c2/x.jpg")
    rows = {f.id: f for f in list_files(ledger)}
    assert rows[first].state == FileState.SUPERSEDED and rows[first].superseded_by == second
    assert summary(ledger, now=NOW).files["failed"] == 1


def test_a_path_with_an_escape_names_no_one_file_and_supersedes_nothing(ledger: Ledger) -> None:
    """b"caf\\xe9.jpg" is shown as caf%E9.jpg, and so is a file really named that: two
    files, two failures, neither hiding the other."""
    first = _fail(ledger, "caf%E9.jpg", "/work/c1/caf\udce9.jpg")
    second = _fail(ledger, "caf%E9.jpg", "/work/c2/caf%E9.jpg")
    rows = {f.id: f for f in list_files(ledger)}
    assert rows[first].state == rows[second].state == FileState.FAILED
    assert summary(ledger, now=NOW).files["failed"] == 2


def test_the_failed_rows_of_a_path_are_found_through_their_index(ledger: Ledger) -> None:
    """The lookup probes ix_files_failed_path per path instead of reading every failed
    row (which grew with the ledger): the plan names the index on both ledgers."""
    first = _fail(ledger, "x.jpg", "/w/x.jpg")
    sqlite = ledger.is_sqlite
    if not sqlite:  # PostgreSQL's planner by its statistics: thousands of failed rows
        _copy_failed_row(ledger, first, 3000)
    sent: list[tuple[str, Any]] = []

    def capture(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    with ledger.engine.connect() as conn:
        event.listen(conn, "before_cursor_execute", capture)
        found = conn.execute(
            _failed_by_path(ledger.engine.dialect.name),
            {"paths": ["x.jpg", "y.jpg"], "settled": "%.error.json"},
        ).all()
        event.remove(conn, "before_cursor_execute", capture)
        statement, parameters = next(s for s in sent if s[0].lstrip().startswith("SELECT"))
        explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
        plan = conn.exec_driver_sql(explain + statement, parameters).all()
    assert "ix_files_failed_path" in " ".join(str(r) for r in plan), plan
    assert [r.path for r in found] == ["x.jpg"]


def _copy_failed_row(ledger: Ledger, file_id: int, copies: int) -> None:
    """`copies` more failed rows like `file_id`, each of its own path; then ANALYZE."""
    columns = [c.name for c in File.__table__.columns if c.name != "id"]
    made = {"path": "'p' || g || '.jpg'", "work_path": "work_path || '.' || g"}
    chosen = ", ".join(made.get(c, c) for c in columns)
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO files ({', '.join(columns)}) SELECT {chosen}"  # noqa: S608 - our names
            f" FROM files, generate_series(1, {copies}) g WHERE id = {file_id}"
        )
    with ledger.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE files")
