"""What the writing transactions (a batch, a lay-out) share: retries, new keys, the commit point.

* A transaction that met a concurrent change (``ConcurrentChange``, a deadlock, a serialization
  failure, as the batch's checked write raises) is rolled back and run again on fresh facts;
  the retry takes the batch writers' advisory lock exclusively (``begin_batch``, or the batch's
  read function), so it runs alone and cannot meet another change. After ``MAX_ATTEMPTS`` the
  request answers 503 (``WriteContention``).
* New rows get their keys from the identity sequence, skipping keys that already exist.
* ``begin_write``: a writing transaction's first statements (timeouts, the writers' lock and,
  with an Idempotency-Key, the scope's lock and record: ``flexsvc.data.idempotency``).
* ``explicit_transaction``: a transaction whose BEGIN and COMMIT are statements the caller
  queues with its own (the batch on a ``roundtrip.StatementQueue``), so a batch takes two
  round trips (SPEC §7).
* ``BeforeCommit``: the one point of a writing transaction just before COMMIT, for work that
  must commit or roll back with the write (an idempotency record, SPEC §9). It is called only
  when the transaction is about to commit: never for a dry run or a rolled-back atomic batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq

from flexsvc.config import PoolSettings
from flexsvc.data import store
from flexsvc.data.db import CONNECTION_ERRORS, Pools
from flexsvc.data.roundtrip import Executes, NamedStatementsLost
from flexsvc.rules.planning import ItemResult

if TYPE_CHECKING:   # flexsvc.data.idempotency imports this module
    from flexsvc.data.idempotency import IdempotentWrite

log = logging.getLogger("flexsvc.writes")

MAX_ATTEMPTS = 5
#: Errors after which the whole transaction is simply tried again on fresh facts.
RETRYABLE_ERRORS = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)

#: ``before_commit(conn, results)``: runs inside the transaction, just before COMMIT. In a
#: batch ``conn`` is the ``StatementQueue`` that ends with COMMIT: what it only executes travels
#: with the write and the COMMIT; what it fetches costs a round trip of its own.
BeforeCommit = Callable[[Executes, Sequence[ItemResult]], None]
T = TypeVar("T")


class ConcurrentChange(Exception):
    """Another transaction created one of our keys after the facts were read."""


class WriteContention(Exception):
    """The write kept meeting concurrent changes; nothing was written. Safe to retry."""


def run_write(
    pools: Pools, database: str, attempt: Callable[[psycopg.Connection, bool], T], *,
    recover: Callable[[], bool] | None = None,
) -> T:
    """Run ``attempt(conn, exclusive)`` (one transaction) until it succeeds.

    ``recover`` is asked after any other database error whether to try once more (it returns
    False to let the error propagate); connection failures always propagate.
    """
    exclusive = False
    for number in range(1, MAX_ATTEMPTS + 1):
        with pools.connection(database) as conn:
            try:
                return attempt(conn, exclusive)
            except (ConcurrentChange, *RETRYABLE_ERRORS) as exc:
                log.info("write attempt %d met a concurrent change (%s); retrying",
                         number, exc.__class__.__name__)
                # A retry runs alone (the batch writers' lock in exclusive mode), so it cannot
                # meet another concurrent create or deadlock: overlapping writes cannot starve.
                exclusive = True
            except NamedStatementsLost:    # nothing was committed; redone with unnamed ones
                continue
            except CONNECTION_ERRORS:   # 503: the database, not this write, failed
                raise
            except psycopg.Error:
                if recover is None or not recover():
                    raise
    raise WriteContention()


@contextmanager
def explicit_transaction(conn: psycopg.Connection) -> Iterator[None]:
    """A block in which the caller sends ``BEGIN`` and ``COMMIT`` itself, as statements.

    psycopg's ``transaction()`` sends BEGIN and COMMIT each in a round trip of their own (and
    syncs a pipeline at both ends); sent as statements, they share the round trips of the
    statements around them: BEGIN with the locks and reads, COMMIT with the write. The pool's
    connections are in autocommit mode, so nothing else starts a transaction. Whatever is
    still open on the way out (an error, a dry run, a rolled-back atomic batch) is rolled back
    here, before the connection goes back to the pool.
    """
    try:
        yield
    finally:
        if not conn.closed and conn.info.transaction_status != pq.TransactionStatus.IDLE:
            with suppress(psycopg.Error):   # the pool discards a connection it cannot reset
                conn.execute(ROLLBACK)


@contextmanager
def pipeline(conn: psycopg.Connection) -> Iterator[None]:
    """``conn.pipeline()``, raising the first error only.

    In a pipeline the server's error (a concurrent change, a lock timeout) can surface while
    the block is still queueing statements, or a check raises (``KeyInUse``) after one; psycopg
    then logs a warning when its sync at the end reports the aborted pipeline again. That
    second report says nothing new, so the block's own exception is raised, and nothing logged.
    """
    failure: Exception | None = None
    try:
        with conn.pipeline():
            try:
                yield
            except Exception as exc:    # raised again below, after the sync
                failure = exc
    except psycopg.Error:
        if failure is None:
            raise
    if failure is not None:
        raise failure


#: The statements ``explicit_transaction`` blocks begin and end with.
BEGIN, COMMIT, ROLLBACK = b"BEGIN", b"COMMIT", b"ROLLBACK"


def begin_write(conn: psycopg.Connection, settings: PoolSettings, *, exclusive: bool,
                idempotency: IdempotentWrite | None) -> None:
    """A lay-out's first statements (a batch folds them into its read), queued in the caller's
    pipeline: without an Idempotency-Key exactly ``store.begin_batch``; with one, also the
    key's lock and record, which are read at once (a round trip), since they may end the
    transaction with a replay, a 409 or a 422 before anything else is read or written."""
    if idempotency is None:
        store.begin_batch(conn, settings, exclusive=exclusive)
    else:
        idempotency.begin(conn, settings, exclusive=exclusive)


def usable_new_keys(
    conn: psycopg.Connection, allocated: dict[int, str | None], needed: int, explicit: set[int],
) -> list[int]:
    """The allocated keys (key: owner group of an existing row, or None) that no row has and no
    item names ``explicit``ly, topped up to ``needed`` from the sequence.

    Keys are taken only when rows were created with explicit keys beyond the sequence; the
    sequence is then advanced so it does not happen again. Fewer than ``needed`` keys come
    back only when the sequence is used up.
    """
    usable = [k for k, owner in allocated.items() if owner is None and k not in explicit]
    taken = [k for k, owner in allocated.items() if owner is not None]
    while len(usable) < needed:
        store.advance_key_sequence(conn, max([*taken, *explicit], default=0))
        more = store.allocate_schedule_keys(conn, needed - len(usable))
        if not more:      # the sequence is used up
            break
        taken += [k for k, owner in more.items() if owner is not None]
        usable += [k for k, owner in more.items() if owner is None and k not in explicit]
    return usable
