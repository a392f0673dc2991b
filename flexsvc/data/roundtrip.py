"""Statements queued, then sent together: one network round trip for many statements.

A small batch is two round trips (SPEC §7), each of several statements. psycopg's pipeline
mode does this, but at a cost per statement that dominated a small batch's client CPU: it
sends every statement in a write of its own and polls the socket around each (measured for a
10-item batch: about 0.9 ms of client CPU per batch through ``conn.pipeline()``, 0.45 ms
through this module; docs/PERFORMANCE.md, "Small batches"). ``StatementQueue`` queues with
libpq's pipeline mode, through psycopg's own libpq wrapper (``psycopg.pq``) and adapters
(``psycopg.adapt.Transformer``): the parameters are dumped by the connection's dumpers and
sent separately from the SQL, exactly as ``conn.execute`` sends them; results are loaded by
its loaders; an error is raised as the same ``psycopg.errors`` class. Only the I/O differs:
everything queued goes out in one write, and the answers are read in one pass.

``execute`` queues and returns a ``Queued`` whose ``fetchone``/``fetchall`` send what is
queued (``sync``) if that has not happened yet, as psycopg's pipeline does on a fetch. As in
any libpq pipeline, the statements of one sync form one implicit transaction unless a BEGIN
was queued (the batch queues one); after an error, the rest of that sync is not run.

Statements are unnamed, except those queued with ``prepare=True`` (the batch's two calls):
those are parsed once per connection under a name that is a hash of their SQL and parameter
types, so that on any server connection, whoever prepared it, a name means that statement
(which makes them safe behind a pooler in transaction mode: docs/DEPLOYMENT.md, §3). When the
server did not keep a name ("does not exist", "already exists"), the sync raises
``NamedStatementsLost`` and the connection sends everything unnamed from then on; the caller
redoes the transaction, of which nothing was committed.
"""

from __future__ import annotations

import hashlib
import logging
import re
import select
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer

from flexsvc.data.db import PREPARED_STATEMENT_ERRORS

log = logging.getLogger("flexsvc.roundtrip")

_OK_RESULTS = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK, pq.ExecStatus.EMPTY_QUERY)


class NamedStatementsLost(Exception):
    """The server did not keep this connection's named statements; nothing was run after the
    first failed one and the transaction is aborted. The connection sends its statements
    unnamed from now on; redo the transaction (nothing of it was committed)."""


_PLACEHOLDER = re.compile(r"%%|%\((\w+)\)([sbt])|%")
_FORMATS = {"s": PyFormat.AUTO, "b": PyFormat.BINARY, "t": PyFormat.TEXT}


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A query with psycopg's ``%(name)s`` placeholders turned into ``$1, $2, ...``."""

    text: bytes
    names: tuple[str, ...]
    formats: tuple[PyFormat, ...]


@lru_cache(maxsize=256)
def _compile(query: str | bytes) -> _Compiled:
    """Our named queries are few: each is compiled once per process."""
    text = query.decode() if isinstance(query, bytes) else query
    names: list[str] = []
    formats: list[PyFormat] = []

    def number(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%"
        name, kind = match.group(1), match.group(2)
        if name is None:
            raise ValueError(f"only %(name)s placeholders are supported: {text[:60]!r}")
        if name in names:     # one parameter per name, as psycopg does
            if formats[names.index(name)] != _FORMATS[kind]:
                raise ValueError(f"placeholder {name!r} is used with two formats")
            return f"${names.index(name) + 1}"
        names.append(name)
        formats.append(_FORMATS[kind])
        return f"${len(names)}"

    return _Compiled(_PLACEHOLDER.sub(number, text).encode(), tuple(names), tuple(formats))


@lru_cache(maxsize=256)
def _statement_name(text: bytes, types: tuple[int, ...]) -> bytes:
    """A name that says what the statement is: the same name is always the same SQL with the
    same parameter types, on any server connection and from any client."""
    digest = hashlib.blake2b(text + repr(types).encode(), digest_size=12).hexdigest()
    return b"flexsvc_" + digest.encode()


class Queued:
    """One queued statement's outcome, readable once its queue was sent."""

    __slots__ = ("_queue", "_result", "_sent")

    def __init__(self, queue: StatementQueue):
        self._queue = queue
        self._result: pq.abc.PGresult | None = None
        self._sent = False

    def _loaded(self) -> pq.abc.PGresult:
        if not self._sent:
            self._queue.sync()
        if self._result is None:     # as psycopg: an earlier statement of its sync failed
            raise pg_errors.PipelineAborted("not run: an earlier statement failed")
        return self._result

    def fetchall(self) -> list[tuple[Any, ...]]:
        result = self._loaded()
        if not result.ntuples:
            return []
        tx = self._queue.transformer
        tx.set_pgresult(result)
        return tx.load_rows(0, result.ntuples, tuple)

    def fetchone(self) -> tuple[Any, ...] | None:
        result = self._loaded()
        if not result.ntuples:
            return None
        tx = self._queue.transformer
        tx.set_pgresult(result)
        return tx.load_row(0, tuple)


class _ConnectionState:
    """What a connection's queues share, made by its first queue and kept by the connection.

    ``transformer``: a Transformer remembers the dumpers and loaders it looked up (the batch's
    array types, its result columns); a new one per transaction looked them up and built them
    again, about 4 % of a small batch's client instructions. ``prepared``: the names of the
    statements this connection prepared; None once its server did not keep one (then it sends
    everything unnamed). Kept as an attribute of the connection, not in a WeakKeyDictionary:
    the Transformer refers to its connection, so such a dictionary would keep every connection
    alive; the attribute is a cycle that goes with the connection. A connection serves one
    thread at a time (the pool), so its queues never use the state at once.
    """

    __slots__ = ("prepared", "transformer")

    def __init__(self, conn: psycopg.Connection):
        self.transformer = Transformer(conn)
        self.prepared: set[bytes] | None = set()


#: The connection attribute that holds its ``_ConnectionState``.
_STATE_ATTRIBUTE = "_flexsvc_queue_state"


def _connection_state(conn: psycopg.Connection) -> _ConnectionState:
    state = getattr(conn, _STATE_ATTRIBUTE, None)
    if state is None:
        state = _ConnectionState(conn)
        setattr(conn, _STATE_ATTRIBUTE, state)
    return state


class StatementQueue:
    """Statements for ``conn``, sent together by ``sync``: one round trip per sync."""

    def __init__(self, conn: psycopg.Connection):
        self.connection = conn
        self._state = _connection_state(conn)
        self.transformer = self._state.transformer
        self._pending: list[tuple[bytes, list[Any] | None, Any, Any, bytes | None, Queued]] = []

    def execute(self, query: str | bytes, params: dict[str, Any] | None = None, *,
                prepare: bool = False) -> Queued:
        """Queue ``query`` (psycopg's ``%(name)s`` placeholders) with ``params``. ``prepare``:
        send it as a named statement, planned once per server connection (unless this
        connection's server did not keep one: then unnamed, as every other statement)."""
        compiled = _compile(query)
        queued = Queued(self)
        if not compiled.names:
            self._pending.append((compiled.text, None, None, None, None, queued))
            return queued
        tx = self.transformer
        values = tx.dump_sequence([params[name] for name in compiled.names], compiled.formats)
        types = tuple(tx.types)
        name = None
        if prepare and self._state.prepared is not None:
            name = _statement_name(compiled.text, types)
        self._pending.append((compiled.text, values, types, list(tx.formats), name, queued))
        return queued

    def sync(self) -> None:
        """Send everything queued in one write and read every answer; then raise the first
        error, as psycopg would (statements after a failed one are not run)."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        for *_statement, queued in pending:
            queued._sent = True
        conn = self.connection
        pgconn = conn.pgconn
        if pgconn.status != pq.ConnStatus.OK:
            raise psycopg.OperationalError("the connection is closed")
        prepared = self._state.prepared
        if prepared is None:       # this connection names nothing: no statement here has a name
            prepared = set()
        parses: list[bytes | None] = []      # per statement: the name parsed for it here
        pgconn.enter_pipeline_mode()
        try:
            for text, values, types, formats, name, _queued in pending:
                if name is None:
                    pgconn.send_query_params(text, values, types, formats)
                    parses.append(None)
                    continue
                parse = name not in prepared and name not in parses
                if parse:
                    pgconn.send_prepare(name, text, types)
                parses.append(name if parse else None)
                pgconn.send_query_prepared(name, values, formats)
            pgconn.pipeline_sync()
            _flush(pgconn)
            answers = iter(_read_until_sync(
                pgconn, len(pending) + sum(parse is not None for parse in parses)))
        except BaseException:
            _abandon(conn)
            raise
        pgconn.exit_pipeline_mode()
        failed: pq.abc.PGresult | None = None
        for (*_sent, queued), parsed in zip(pending, parses, strict=True):
            if parsed is not None:
                reply = next(answers)     # the Parse's own answer comes first
                if reply.status == pq.ExecStatus.COMMAND_OK:
                    prepared.add(parsed)  # kept by the session, whatever happens after it
                elif failed is None and reply.status == pq.ExecStatus.FATAL_ERROR:
                    failed = reply
            result = next(answers)
            if result.status in _OK_RESULTS:
                queued._result = result
            elif failed is None and result.status == pq.ExecStatus.FATAL_ERROR:
                failed = result
        if failed is None:
            return
        failure = pg_errors.error_from_result(failed, encoding=conn.info.encoding)
        if isinstance(failure, PREPARED_STATEMENT_ERRORS) and any(
                name is not None for *_sent, name, _queued in pending):
            self._state.prepared = None
            log.info("the server did not keep this connection's named statements (%s; a "
                     "pooler in transaction mode?): they are sent unnamed from now on",
                     failure.sqlstate)
            raise NamedStatementsLost() from failure
        raise failure


#: What the data layer's functions accept when they only run statements and read their rows:
#: a connection (a round trip per fetch) or a queue (a round trip per sync).
Executes = psycopg.Connection | StatementQueue


def _wait(pgconn: pq.abc.PGconn, events: int) -> int:
    poller = select.poll()
    poller.register(pgconn.socket, events)
    ready = 0
    while not ready:
        ready = sum(event for _fd, event in poller.poll())
    return ready


def _flush(pgconn: pq.abc.PGconn) -> None:
    """Send the output buffer (the connection is non-blocking), reading meanwhile."""
    while pgconn.flush():
        if _wait(pgconn, select.POLLIN | select.POLLOUT) & ~select.POLLOUT:
            pgconn.consume_input()


def _read_until_sync(pgconn: pq.abc.PGconn, statements: int) -> list[pq.abc.PGresult]:
    """The last result of each of ``statements`` statements, then the pipeline's sync."""
    answers: list[pq.abc.PGresult] = []
    last: pq.abc.PGresult | None = None
    while True:
        while pgconn.is_busy():
            _wait(pgconn, select.POLLIN)
            pgconn.consume_input()     # raises OperationalError when the connection is lost
        result = pgconn.get_result()
        if result is None:            # the end of one statement's results
            if last is None or pgconn.status != pq.ConnStatus.OK:
                raise psycopg.OperationalError(
                    pgconn.get_error_message() or "the connection was lost")
            answers.append(last)
            last = None
        elif result.status == pq.ExecStatus.PIPELINE_SYNC:
            if len(answers) != statements:
                raise psycopg.OperationalError("the server answered out of order")
            return answers
        else:
            last = result


def _abandon(conn: psycopg.Connection) -> None:
    """An answer was not read to the end (a lost connection, an interrupt): the connection's
    state is unknown, so it is closed, and the pool replaces it."""
    conn.close()
