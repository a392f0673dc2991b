"""Helpers shared by the tests: credentials, request headers, batch items, stored rows."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg

from flexsvc.config import AuthSettings
from flexsvc.http.auth import issue_token

JWT_SECRET = "test-jwt-secret-that-is-long-enough-for-hs256"
JWT_ISSUER = "https://issuer.test"
JWT_AUDIENCE = "flexsvc"
API_KEYS = {
    "payroll": ("key-payroll-0123456789", ["main"]),
    "other-tenant": ("key-other-0123456789", ["other"]),
    "everything": ("key-everything-012345", ["*"]),
}
GROUP = "G1"
OTHER_GROUP = "G2"
YEAR = "2026"


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid JWT claims for the test issuer; an override of None removes that claim."""
    now = int(time.time())
    base = {"sub": "alice", "iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "iat": now, "nbf": now,
            "exp": now + 300}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def token(user: str = "alice", **kwargs: Any) -> str:
    auth = AuthSettings(jwt_algorithms=("HS256",), jwt_secret=JWT_SECRET, jwt_issuer=JWT_ISSUER,
                        jwt_audience=JWT_AUDIENCE)
    return issue_token(auth, user, **kwargs)


def headers(key: str | None = "payroll", user: str | None = "alice",
            database: str | None = "main", **extra: str) -> dict[str, str]:
    """Request headers for a caller: an API key by name, a JWT for ``user``, a tenant."""
    result = {"Content-Type": "application/json"}
    if key is not None:
        result["x-api-key"] = API_KEYS[key][0]
    if user is not None:
        result["Authorization"] = f"Bearer {token(user)}"
    if database is not None:
        result["vbasoftware-database"] = database
    result.update(extra)
    return result


def item(key: int = 0, **fields: Any) -> dict[str, Any]:
    """A valid batch item for group G1, plan P1, 2026, overridable field by field."""
    base = {"groupFlexSchedule_Key": key, "group_ID": GROUP, "plan_ID": "P1",
            "calendar_Year": YEAR, "schedule_Date": "2026-01-15", "schedule_Type": "MONTHLY"}
    base.update(fields)
    return base


def put_batch(client, items: Any, group: str = GROUP, query: str = "", **header_args: Any):
    url = f"/groups/{group}/flex-schedules-batch" + (f"?{query}" if query else "")
    return client.put(url, json=items, headers=headers(**header_args))


def rows(conn: psycopg.Connection, where: str = "TRUE") -> list[dict[str, Any]]:
    """All group_flex_schedule rows (ordered by key) as dicts, for asserting what was stored."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(f"SELECT * FROM group_flex_schedule WHERE {where} "
                           "ORDER BY group_flex_schedule_key").fetchall()


def statuses(response) -> list[int]:
    return [r["status"] for r in response.get_json()["data"]]


def in_thread(call) -> tuple[threading.Thread, list]:
    """Run ``call()`` in a daemon thread; its result lands in the returned list."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    return thread, result
