"""Many rows a statement (`reka_ingest.ledger.bulk`), on SQLite and PostgreSQL.

Poll outcomes: each `indexing` row gets exactly its own outcome's values and one more
poll, a row another writer took out of `indexing` meanwhile is left as it is, and the
counts stay exact; settled failures get their final path only while still `failed`.
Any Python value a column takes (an int for a float column, a bool for an int one)
is written as the column holds it, and on PostgreSQL the statement (rows as arrays)
is the same text for any number of rows: psycopg parses each placeholder in Python."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Table, event, insert, select, text, update

from reka_ingest.core.states import FileState, Origin, Reason
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.bulk import update_by_id
from reka_ingest.ledger.counts import files_by_state
from reka_ingest.ledger.intake import NewFile, record_files
from reka_ingest.ledger.polling import PollOutcome, record_polls, record_settled
from reka_ingest.ledger.schema import File

FILES = cast(Table, File.__table__)
NOW = 2_000_000.0
COLUMNS = (
    "state",
    "polls",
    "poll_request_id",
    "next_poll_at",
    "poll_delay",
    "indexing_status",
    "image_url",
    "reason",
    "message",
    "indexed_at",
    "finished_at",
    "updated_at",
)
_names = itertools.count()

# Text as it is stored (NUL and lone surrogates are escaped on the way in: test_values).
texts = st.one_of(st.none(), st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12))
outcomes: st.SearchStrategy[dict[str, Any]] = st.builds(
    dict,
    state=st.sampled_from([FileState.INDEXING, FileState.INDEXED, FileState.FAILED]),
    indexing_status=st.one_of(st.none(), st.integers(0, 3)),
    image_url=texts,
    request_id=texts,
    next_poll_at=st.one_of(st.none(), st.floats(0, 1e9)),
    poll_delay=st.one_of(st.none(), st.floats(0, 1e4)),
    taken_meanwhile=st.booleans(),
)


def _rows(ledger: Ledger, n: int) -> list[int]:
    """`n` files being indexed (polled twice already); their ids."""
    tag = next(_names)
    with ledger.write() as s:
        s.execute(
            insert(FILES),
            [
                {
                    "path": f"p{tag}-{i}.jpg",
                    "source_root": "/in",
                    "work_path": f"/work/p{tag}-{i}.jpg",
                    "origin": Origin.EVENT,
                    "size": 1,
                    "mtime": 1.0,
                    "state": FileState.INDEXING,
                    "image_id": f"img-{tag}-{i}",
                    "polls": 2,
                    "next_poll_at": 5.0,
                    "seen_at": 1.0,
                    "updated_at": 1.0,
                }
                for i in range(n)
            ],
        )
        ids = s.scalars(
            select(FILES.c.id).where(FILES.c.path.like(f"p{tag}-%")).order_by(FILES.c.id)
        ).all()
    return list(ids)


def _read(ledger: Ledger, ids: list[int]) -> dict[int, dict[str, Any]]:
    with ledger.read() as s:
        got = s.execute(
            select(FILES.c.id, *(FILES.c[c] for c in COLUMNS)).where(FILES.c.id.in_(ids))
        )
        return {r.id: {c: getattr(r, c) for c in COLUMNS} for r in got}


def _expected(before: dict[str, Any], o: PollOutcome, taken: bool) -> dict[str, Any]:
    """What the old row-by-row write gave a row: its outcome's values, one more poll."""
    if taken:
        return before
    row = dict(before, state=o.state, polls=before["polls"] + 1, updated_at=NOW)
    row |= {"poll_request_id": o.request_id, "next_poll_at": o.next_poll_at}
    row["poll_delay"] = o.poll_delay
    if o.indexing_status is not None:
        row["indexing_status"] = o.indexing_status
    if o.image_url:
        row["image_url"] = o.image_url
    if o.reason is not None:
        row |= {"reason": o.reason, "message": o.message}
    if o.state == FileState.INDEXED:
        row["indexed_at"] = NOW
    if o.state != FileState.INDEXING:
        row["finished_at"] = NOW
    return row


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drawn=st.lists(outcomes, min_size=1, max_size=40))
def test_each_row_gets_its_own_outcome_and_a_row_taken_meanwhile_none(
    ledger: Ledger, drawn: list[dict[str, Any]]
) -> None:
    ids = _rows(ledger, len(drawn))
    taken = {i for i, d in zip(ids, drawn, strict=True) if d["taken_meanwhile"]}
    if taken:  # a retry (say) took them out of `indexing` before the round's write
        with ledger.write() as s:
            s.execute(update(FILES).where(FILES.c.id.in_(taken)).values(state=FileState.QUEUED))
    before = _read(ledger, ids)
    polls = [
        PollOutcome(
            file_id=i,
            state=d["state"],
            indexing_status=d["indexing_status"],
            image_url=d["image_url"],
            request_id=d["request_id"],
            reason=Reason.INDEXING_FAILED if d["state"] == FileState.FAILED else None,
            message="indexing failed" if d["state"] == FileState.FAILED else None,
            next_poll_at=d["next_poll_at"],
            poll_delay=d["poll_delay"],
        )
        for i, d in zip(ids, drawn, strict=True)
    ]
    record_polls(ledger, polls, now=NOW)
    after = _read(ledger, ids)
    for o in polls:
        assert after[o.file_id] == _expected(before[o.file_id], o, o.file_id in taken)
    with ledger.read() as s:
        truth = Counter(r.state for r in s.execute(text("SELECT state FROM files")))
        assert files_by_state(s) == dict(truth)


def test_a_settled_failure_gets_its_final_path_only_while_still_failed(ledger: Ledger) -> None:
    ids = _rows(ledger, 3)
    with ledger.write() as s:
        s.execute(update(FILES).where(FILES.c.id.in_(ids)).values(state=FileState.FAILED))
        s.execute(update(FILES).where(FILES.c.id == ids[2]).values(state=FileState.QUEUED))
    record_settled(
        ledger, [(ids[0], "/failed/a.jpg"), (ids[2], "/failed/c.jpg")], [ids[1]], now=NOW
    )
    with ledger.read() as s:
        got = {
            r.id: (r.state, r.final_path, r.next_poll_at)
            for r in s.execute(
                select(FILES.c.id, FILES.c.state, FILES.c.final_path, FILES.c.next_poll_at).where(
                    FILES.c.id.in_(ids)
                )
            )
        }
    assert got == {
        ids[0]: ("failed", "/failed/a.jpg", None),
        ids[1]: ("failed", None, None),
        ids[2]: ("queued", None, 5.0),  # a retry took it: left alone
    }


# Values of each Python type a float, an int, a text and a boolean column may be given.
mixed_rows = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(-(10**6), 10**6), st.floats(-1e9, 1e9)),
        st.one_of(st.none(), st.booleans(), st.integers(0, 3)),
        texts,
        st.one_of(st.booleans(), st.integers(0, 1)),  # possible_duplicate: never NULL
    ),
    min_size=1,
    max_size=30,
)
MIXED = ("next_poll_at", "indexing_status", "image_url", "possible_duplicate")


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(values=mixed_rows)
def test_any_python_values_a_column_takes_are_written_as_it_holds_them(
    ledger: Ledger, values: list[tuple[Any, ...]]
) -> None:
    ids = _rows(ledger, len(values))
    with ledger.write() as s:
        update_by_id(
            s, MIXED, [(i, *v) for i, v in zip(ids, values, strict=True)], {"updated_at": NOW}
        )
    with ledger.read() as s:
        got = {
            r[0]: tuple(r[1:])
            for r in s.execute(
                select(FILES.c.id, *(FILES.c[c] for c in MIXED)).where(FILES.c.id.in_(ids))
            )
        }
    for i, (when, status, url, dup) in zip(ids, values, strict=True):
        want = (
            None if when is None else float(when),
            None if status is None else int(status),
            url,
            bool(dup),
        )
        assert got[i] == want
        assert [type(v) for v in got[i]] == [type(v) for v in want]


def _statements(ledger: Ledger) -> tuple[list[str], Any]:
    sent: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "files" in statement and ("INSERT" in statement or "UPDATE" in statement):
            sent.append(statement)

    event.listen(ledger.engine, "before_cursor_execute", capture)
    return sent, capture


def _new(tag: str, i: int, when: float) -> NewFile:
    return NewFile(
        path=f"{tag}/{i}.jpg",
        source_root="/in",
        work_path=f"/w/{tag}/{i}.jpg",
        origin=Origin.EVENT,
        size=1 + i,
        mtime=when,
        sha256=f"{tag}{i}".encode().hex().ljust(64, "0"),
        seen_at=when,
    )


def test_on_postgresql_a_statement_is_one_text_for_any_number_of_rows(ledger: Ledger) -> None:
    if ledger.is_sqlite:
        pytest.skip("SQLite binds in C: a VALUES list costs nothing to parse")
    sent, capture = _statements(ledger)
    try:
        for tag, n in (("few", 3), ("many", 400)):
            # Whole seconds among fractions: psycopg dumps no list of mixed types.
            recorded = record_files(
                ledger, [_new(tag, i, 7 if i % 2 else 7.5) for i in range(n)], now=NOW
            )
            with ledger.write() as s:
                update_by_id(
                    s,
                    ("next_poll_at",),
                    [(r.file_id, 5 if r.file_id % 2 else None) for r in recorded],
                    {},
                )
    finally:
        event.remove(ledger.engine, "before_cursor_execute", capture)
    inserts = [q for q in sent if q.startswith("INSERT")]
    updates = [q for q in sent if q.startswith("UPDATE")]
    assert len(inserts) == 2 and inserts[0] == inserts[1] and "unnest(" in inserts[0]
    assert len(updates) == 2 and updates[0] == updates[1] and "unnest(" in updates[0]
    for statement in (inserts[0], updates[0]):  # a placeholder a column, none a value
        assert 0 < len(re.findall(r"%[sb]", statement)) < 30, statement
    with ledger.read() as s:
        rows = s.execute(
            select(FILES.c.path, FILES.c.mtime, FILES.c.next_poll_at).where(
                FILES.c.path.like("many/%")
            )
        ).all()
    assert len(rows) == 400
    assert {(type(m), m) for _, m, _ in rows} == {(float, 7.0), (float, 7.5)}


def test_a_guarded_write_on_sqlite_looks_up_its_rows_and_reads_no_other(ledger: Ledger) -> None:
    """The state guard is a term of the join (`v.held`): as a term on `files` alone,
    SQLite filled a Bloom filter from every row of the table first (a poll round of
    500 rows: 9 ms on an empty ledger, 490 at a million rows)."""
    if not ledger.is_sqlite:
        pytest.skip("PostgreSQL's plans are held by tests/ledger/test_query_plans.py")
    ids = _rows(ledger, 200)
    with ledger.write() as s:  # a shape in which the old form's plan built the filter
        s.execute(update(FILES).where(FILES.c.id.in_(ids[100:])).values(state=FileState.INDEXED))
        s.execute(text("ANALYZE"))
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "v.held" in statement:
            sent.append((statement, params))

    event.listen(ledger.engine, "before_cursor_execute", capture)
    try:
        polls = [
            PollOutcome(
                file_id=i,
                state=FileState.INDEXED,
                indexing_status=2,
                image_url=None,
                request_id=None,
            )
            for i in ids[:100]
        ]
        record_polls(ledger, polls, now=NOW)
    finally:
        event.remove(ledger.engine, "before_cursor_execute", capture)
    [(statement, params)] = sent
    with ledger.read() as s:
        plan = [
            row[3]
            for row in s.connection().exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params)
        ]
    on_files = [line for line in plan if "files" in line]
    assert on_files, plan
    assert all(line.startswith("SEARCH files USING") for line in on_files), plan
    with ledger.read() as s:
        states = s.execute(select(FILES.c.state).where(FILES.c.id.in_(ids[:100]))).scalars()
        assert set(states) == {FileState.INDEXED}
