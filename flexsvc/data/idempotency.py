"""Exactly-once writes with an Idempotency-Key (SPEC §9): the transaction's two extra steps.

A writing transaction that carries an ``IdempotentWrite``:

1. ``begin``: in its first round trip, the usual timeouts and writers' lock, a try at the
   scope's transaction-scoped advisory lock and, pipelined after it, the lookup of the scope's
   unexpired record. Held by another request (the same key still running): wait for it, at
   most ``lock_timeout``, and look again (``KeyInUse``, a 409, when it is still running then).
   A record with the same fingerprint: ``Replay`` (the transaction rolls back; nothing is
   written). With another fingerprint: ``KeyReused`` (a 422).
2. ``record``: as its last statement before COMMIT (only when it is about to commit), the
   answer rendered by the caller, inserted with a bounded prune of expired records. Since it
   commits or rolls back with the writes, a commit that happened is always replayable and one
   that did not never is.

The lock makes a concurrent duplicate wait instead of doing the work twice; the record's
primary key is the backstop (a live record met on insert aborts the transaction with a
serialization failure: the write is retried, finds the record and replays it). Nothing lives
in process memory: any worker on any host behind any pooler replays what another recorded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from psycopg import errors as pg_errors

from flexsvc.config import PoolSettings
from flexsvc.data.queries import sql
from flexsvc.data.roundtrip import Executes
from flexsvc.data.store import timeouts

#: Expired records deleted with each new one: more than one request ever adds, so the table
#: stays bounded by the records of one ``ttl_hours`` window.
PRUNE_LIMIT = 100


@dataclass(frozen=True, slots=True)
class IdempotencyScope:
    """Whose key it is and what request it names. The tenant is the database itself."""

    api_key_name: str   # '' when the request carried no API key
    jwt_user: str       # '' when it carried no JWT
    key: str
    fingerprint: bytes  # SHA-256 of method, path, query and body bytes

    @property
    def lock_id(self) -> int:
        """The scope's advisory lock: 64 bits of a hash (a collision only serialises)."""
        text = "\0".join((self.api_key_name, self.jwt_user, self.key)).encode()
        return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big", signed=True)

    def params(self) -> dict[str, Any]:
        return {"api_key_name": self.api_key_name, "jwt_user": self.jwt_user,
                "idempotency_key": self.key, "scope_lock": self.lock_id}


@dataclass(frozen=True, slots=True)
class RecordedResponse:
    """An answer as sent: status, the exact body bytes, the two headers that are kept."""

    status: int
    body: bytes
    content_type: str | None = None
    location: str | None = None


class Replay(Exception):
    """The scope's record matches this request: answer ``response``; nothing was written."""

    def __init__(self, response: RecordedResponse):
        super().__init__("replay")
        self.response = response


class KeyReused(Exception):
    """The key was used for a different request (another fingerprint): 422."""


class KeyInUse(Exception):
    """The first request with this key is still running (after waiting lock_timeout): 409."""


#: Turns a write's outcome into the answer to send and record (supplied by the HTTP layer).
Render = Callable[[Any], RecordedResponse]


@dataclass(slots=True)
class IdempotentWrite:
    """What a writing transaction needs to be idempotent; ``recorded`` is what it recorded
    (None: nothing was, e.g. a dry run or a rolled-back atomic batch)."""

    scope: IdempotencyScope
    render: Render
    ttl_seconds: float
    recorded: RecordedResponse | None = field(default=None)

    def begin(self, conn: Executes, settings: PoolSettings, *,
              exclusive: bool | None) -> None:
        """``send_begin`` and its check at once: in a pipeline, one round trip for what is
        queued so far and these."""
        self.send_begin(conn, settings, exclusive=exclusive)()

    def send_begin(self, conn: Executes, settings: PoolSettings, *,
                   exclusive: bool | None) -> Callable[[], None]:
        """Queue the transaction's first statements: timeouts, the writers' lock (``exclusive``
        True/False; None for a delete, which takes none), a try at the scope's lock and the
        lookup of its record. Return the check, which reads them (after the pipeline's sync,
        or at once) and raises ``Replay``, ``KeyReused`` or ``KeyInUse``."""
        self.recorded = None
        params = {**timeouts(settings), **self.scope.params()}
        if exclusive is None:
            begin = sql("begin_idempotent_delete")
        else:
            begin, params["exclusive"] = sql("begin_idempotent_write"), exclusive
        locked = conn.execute(begin, params)
        found = conn.execute(sql("find_idempotency_record"), params)

        def check() -> None:
            looked_up = found if locked.fetchone()[-1] else self._wait(conn, params)
            self._check(looked_up.fetchone())

        return check

    def _wait(self, conn: Executes, params: dict[str, Any]) -> Any:
        """Another request holds the scope: wait until it ends, then look again."""
        try:
            waited = conn.execute(sql("wait_idempotency_lock"), params)
            waited.fetchone()
        except pg_errors.LockNotAvailable as exc:
            raise KeyInUse() from exc
        return conn.execute(sql("find_idempotency_record"), params)

    def _check(self, row: tuple | None) -> None:
        if row is None:
            return
        fingerprint, status, content_type, location, body = row
        if bytes(fingerprint) != self.scope.fingerprint:
            raise KeyReused()
        raise Replay(RecordedResponse(status, bytes(body), content_type, location))

    def record(self, conn: Executes, outcome: Any) -> None:
        """Render the answer and record it (the transaction's last statement before COMMIT).

        One statement that checks itself (a live record met: serialization_failure, and the
        write is retried), so it may be queued in the pipeline that ends with COMMIT. An
        exception from ``render`` (a whole-request error) propagates: the transaction rolls
        back, and nothing is recorded."""
        response = self.render(outcome)
        params = {**self.scope.params(), "fingerprint": self.scope.fingerprint,
                  "status": response.status, "content_type": response.content_type,
                  "location": response.location, "body": response.body,
                  "ttl_seconds": self.ttl_seconds, "limit": PRUNE_LIMIT}
        conn.execute(sql("record_idempotency"), params)
        self.recorded = response
