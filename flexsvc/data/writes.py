"""What the writing transactions (a batch, a lay-out) share: retries, new keys, the commit point.

* A transaction that met a concurrent change (``ConcurrentChange``, a deadlock, a serialization
  failure) is rolled back and run again on fresh facts; the retry takes the batch writers'
  advisory lock exclusively (``store.begin_batch``), so it runs alone and cannot meet another
  change. After ``MAX_ATTEMPTS`` the request answers 503 (``WriteContention``).
* New rows get their keys from the identity sequence, skipping keys that already exist.
* ``begin_write``: a writing transaction's first round trip (timeouts, the writers' lock and,
  with an Idempotency-Key, the scope's lock and record: ``flexsvc.data.idempotency``).
* ``BeforeCommit``: the one point of a writing transaction just before COMMIT, for work that
  must commit or roll back with the write (an idempotency record, SPEC §9). It is called only
  when the transaction is about to commit: never for a dry run or a rolled-back atomic batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import psycopg
from psycopg import errors as pg_errors

from flexsvc.config import PoolSettings
from flexsvc.data import store
from flexsvc.data.db import CONNECTION_ERRORS, Pools
from flexsvc.rules.planning import ItemResult

if TYPE_CHECKING:   # flexsvc.data.idempotency imports this module
    from flexsvc.data.idempotency import IdempotentWrite

log = logging.getLogger("flexsvc.writes")

MAX_ATTEMPTS = 5
#: Errors after which the whole transaction is simply tried again on fresh facts.
RETRYABLE_ERRORS = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)

#: ``before_commit(conn, results)``: runs inside the transaction, just before COMMIT.
BeforeCommit = Callable[[psycopg.Connection, Sequence[ItemResult]], None]
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
            except CONNECTION_ERRORS:   # 503: the database, not this write, failed
                raise
            except psycopg.Error:
                if recover is None or not recover():
                    raise
    raise WriteContention()


def begin_write(conn: psycopg.Connection, settings: PoolSettings, *, exclusive: bool,
                idempotency: IdempotentWrite | None) -> None:
    """The first round trip of a batch or lay-out: without an Idempotency-Key exactly
    ``store.begin_batch``; with one, also the key's lock and record (which may end the
    transaction with a replay, a 409 or a 422 before anything is written)."""
    if idempotency is None:
        store.begin_batch(conn, settings, exclusive=exclusive)
    else:
        idempotency.begin(conn, settings, exclusive=exclusive)


def usable_new_keys(
    conn: psycopg.Connection, allocated: list[int], needed: int, explicit: set[int],
    owners: dict[int, str],
) -> list[int]:
    """Drop allocated keys that already exist (``owners``) or are named ``explicit``ly; top up.

    That only happens when rows were created with explicit keys beyond the sequence; the
    sequence is then advanced so it does not happen again. Fewer than ``needed`` keys come
    back only when the sequence is used up.
    """
    usable = [k for k in allocated if k not in owners and k not in explicit]
    while len(usable) < needed:
        taken = max(owners, default=0)
        store.advance_key_sequence(conn, max(taken, max(explicit, default=0)))
        more = store.allocate_schedule_keys(conn, needed - len(usable))
        if not more:      # the sequence is used up
            break
        existing = store.lock_schedules_by_key(conn, more)
        owners.update(existing)
        usable += [k for k in more if k not in existing and k not in explicit]
    return usable
