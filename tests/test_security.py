"""Security (SPEC §3, §5): tenant and group isolation, JWT hardening, API keys as digests, no
secrets or record contents in logs, no SQL/DSN/trace in responses, SQL injection is inert."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import time
import uuid

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from flexsvc import create_app
from flexsvc.config import ConfigError, settings_from_mapping
from flexsvc.data.migrations import apply_migrations
from flexsvc.http import auth as auth_module
from flexsvc.ops.embedded import free_port
from flexsvc.ops.logs import JsonFormatter
from tests.conftest import create_database, drop_database, seed_groups, settings_mapping
from tests.helpers import (
    API_KEYS,
    JWT_SECRET,
    claims,
    headers,
    item,
    rows,
)

URL = "/groups/G1/flex-schedules-batch"
LEAKS = ("Traceback", "psycopg", "postgresql://", "SELECT ", "INSERT ", "UPDATE ", "relation ",
         "column ", "group_flex_schedule", "flex_schedule_type", "DETAIL", "File \"", "line ")


def assert_no_leak(response, *secrets: str, echo: str = "") -> None:
    """No SQL, DSN, trace or secret in the body. ``instance`` (the client's own path) and
    ``echo`` (the client's own text, quoted back in a 400's detail) are not leaks."""
    body = response.get_json()
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body["error"]["instance"] = None
    text = json.dumps(body, ensure_ascii=False)
    if echo:
        text = text.replace(json.dumps(echo, ensure_ascii=False)[1:-1], "")
    for leak in (*LEAKS, *secrets):
        assert leak not in text, (leak, text[:300])


def b64(data: bytes | dict) -> str:
    if isinstance(data, dict):
        data = json.dumps(data).encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, payload: dict, key: bytes | None = JWT_SECRET.encode()) -> str:
    """A token built by hand (PyJWT refuses to build many of these)."""
    signing_input = f"{b64(header)}.{b64(payload)}"
    signature = b"" if key is None else hmac.new(key, signing_input.encode(),
                                                 hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def bearer(token: str, **kwargs) -> dict[str, str]:
    result = headers(user=None, **kwargs)
    result["Authorization"] = f"Bearer {token}"
    return result


def other_rows(tenant_dsns) -> int:
    with psycopg.connect(tenant_dsns["other"]) as conn:
        return conn.execute("SELECT count(*) FROM group_flex_schedule").fetchone()[0]


@pytest.fixture
def other_seeded(tenant_dsns):
    """Tenant "other" with the same group G1 and one record, so a cross-tenant write would
    succeed if it were let through (a 404 could otherwise hide a leak)."""
    with psycopg.connect(tenant_dsns["other"], autocommit=True) as conn:
        conn.execute("TRUNCATE group_flex_schedule, group_flex, groups RESTART IDENTITY CASCADE")
        seed_groups(conn)
        conn.execute("INSERT INTO group_flex_schedule (group_flex_schedule_key, group_id, "
                     "plan_id, calendar_year, schedule_date, schedule_type, entry_date, "
                     "update_date) VALUES (500, 'G1', 'P1', '2026', '2030-01-01', 'MONTHLY', "
                     "now(), now())")
    yield
    with psycopg.connect(tenant_dsns["other"], autocommit=True) as conn:
        conn.execute("TRUNCATE group_flex_schedule, group_flex, groups RESTART IDENTITY CASCADE")


# --- tenant isolation ---------------------------------------------------------------------

def cross_tenant_attempts():
    """(description, headers) for callers that must NOT reach tenant "other"."""
    return [
        ("main key", headers(key="payroll", database="other")),
        ("main key, db header upper", headers(key="payroll", database="OTHER")),
        ("main key, padded", headers(key="payroll", database=" other ")),
        ("main key, list", headers(key="payroll", database="other,main")),
        ("wildcard key, token narrowed to main",
         bearer(jwt.encode(claims(databases=["main"]), JWT_SECRET), key="everything",
                database="other")),
        ("wildcard key, token with empty list",
         bearer(jwt.encode(claims(databases=[]), JWT_SECRET), key="everything",
                database="other")),
        ("wildcard key, token claims '*'",
         bearer(jwt.encode(claims(databases=["*"]), JWT_SECRET), key="everything",
                database="other")),
        ("wildcard key, token claims other in different case",
         bearer(jwt.encode(claims(databases=["OTHER", "other "]), JWT_SECRET),
                key="everything", database="other")),
    ]


# Headers are built when the test runs, not at collection: their tokens expire after 5 minutes,
# and a loaded machine can take longer than that to get here.
@pytest.mark.parametrize("name", [n for n, _ in cross_tenant_attempts()])
def test_a_caller_never_reaches_another_tenant(client, tenant_dsns, other_seeded, name):
    sent = dict(cross_tenant_attempts())[name]
    before = other_rows(tenant_dsns)
    attempts = [
        client.put(URL, json=[item(1), item(500, plan_ID="P2")], headers=sent),
        client.get("/groups/G1/flex-schedules", headers=sent),
        client.get("/groups/G1/flex-schedules/500", headers=sent),
        client.put("/groups/G1/flex-schedules/500", json=item(500, plan_ID="P2"), headers=sent),
        client.post("/groups/G1/flex-schedules", json=item(0), headers=sent),
        client.delete("/groups/G1/flex-schedules/500", headers=sent),
    ]
    for response in attempts:
        assert response.status_code in (400, 403), (name, response.get_data()[:300])
        assert response.get_json()["data"] is None
        # Not a value of the other tenant's rows (the random activityID left out: it may hold
        # those digits by chance).
        assert "2030" not in str(response.get_json()["error"])
    assert other_rows(tenant_dsns) == before


def test_duplicate_database_headers_cannot_smuggle_a_tenant(app, tenant_dsns, other_seeded, db):
    """Two vbasoftware-database headers: whatever the service picks, the key's allow-list holds."""
    client = app.test_client()
    sent = [(k, v) for k, v in headers(key="payroll").items() if k != "vbasoftware-database"]
    for order in (["main", "other"], ["other", "main"]):
        response = client.put(URL, json=[item(1)], headers=sent + [
            ("vbasoftware-database", name) for name in order])
        assert response.status_code in (207, 403)
    assert other_rows(tenant_dsns) == 1


def test_unknown_and_forbidden_databases_get_the_same_403(client, db):
    forbidden = client.put(URL, json=[], headers=headers(key="payroll", database="other"))
    unknown = client.put(URL, json=[], headers=headers(key="payroll", database="nope"))
    injected = client.put(URL, json=[], headers=headers(database="main' OR '1'='1"))
    bodies = [r.get_json()["error"] for r in (forbidden, unknown, injected)]
    assert {r.status_code for r in (forbidden, unknown, injected)} == {403}
    assert len({(b["title"], b["detail"]) for b in bodies}) == 1


def test_require_either_token_claim_narrows_and_keys_stay_bound(tenant_dsns, db, other_seeded):
    mapping = settings_mapping(tenant_dsns)
    mapping["auth"] = {**mapping["auth"], "require": "either"}
    app = create_app(settings_from_mapping(mapping, environ={}))
    try:
        client = app.test_client()
        token_main = jwt.encode(claims(databases=["main"]), JWT_SECRET)
        assert client.put(URL, json=[item(1)], headers=bearer(
            token_main, key=None, database="other")).status_code == 403
        assert client.put(URL, json=[item(1)], headers=headers(
            key="payroll", user=None, database="other")).status_code == 403
        # Both sent: a valid key for "other" does not widen a token narrowed to "main".
        assert client.put(URL, json=[item(1)], headers=bearer(
            token_main, key="other-tenant", database="other")).status_code == 403
        assert other_rows(tenant_dsns) == 1
    finally:
        app.extensions["flexsvc.pools"].close()


# --- group isolation ----------------------------------------------------------------------

def test_a_key_of_another_group_is_409_and_never_moved(client, db):
    assert client.put("/groups/G2/flex-schedules-batch", json=[
        item(42, group_ID="G2", schedule_Date="2026-03-03")], headers=headers()).status_code == 207
    (before,) = rows(db)
    response = client.put(URL, json=[item(42), item(42, plan_ID="P2"), item(43)],
                          headers=headers())
    assert [r["status"] for r in response.get_json()["data"]] == [409, 409, 201]
    single = client.put("/groups/G1/flex-schedules/42", json=item(42), headers=headers())
    assert single.status_code in (404, 409)
    assert client.delete("/groups/G1/flex-schedules/42", headers=headers()).status_code == 404
    assert client.get("/groups/G1/flex-schedules/42", headers=headers()).status_code == 404
    listed = client.get("/groups/G1/flex-schedules", headers=headers()).get_json()["data"]
    assert [r["groupFlexSchedule_Key"] for r in listed] == [43]
    # group_ID in the body cannot redirect the write either.
    sneaky = client.put(URL, json=[item(44, group_ID="G2")], headers=headers())
    assert sneaky.get_json()["data"][0]["status"] == 400
    after = {r["group_flex_schedule_key"]: r for r in rows(db)}
    assert after[42] == before and set(after) == {42, 43}


# --- JWT hardening ------------------------------------------------------------------------

_EC_KEY = ec.generate_private_key(ec.SECP256R1())
NOW = int(time.time())
TOKENS = {
    "alg none": lambda: forge({"alg": "none", "typ": "JWT"}, claims(), key=None),
    "alg None": lambda: forge({"alg": "None"}, claims(), key=None),
    "alg NONE with signature": lambda: forge({"alg": "NONE"}, claims()),
    "HS256 header, empty signature": lambda: forge({"alg": "HS256"}, claims(), key=None),
    "HS256 signed with empty key": lambda: forge({"alg": "HS256"}, claims(), key=b""),
    "wrong key": lambda: forge({"alg": "HS256"}, claims(), key=b"not-the-secret-" * 3),
    "HS512 (not configured)": lambda: jwt.encode(claims(), JWT_SECRET, algorithm="HS512"),
    "ES256 (not configured)": lambda: jwt.encode(claims(), _EC_KEY, algorithm="ES256"),
    "alg as list": lambda: forge({"alg": ["HS256"]}, claims()),
    "jku to attacker": lambda: forge({"alg": "HS256", "jku": "http://127.0.0.1:1/k"},
                                     claims(), key=b"attacker"),
    "kid injection": lambda: forge({"alg": "HS256", "kid": "../../dev/null' OR 1=1"},
                                   claims(), key=b""),
    "expired": lambda: jwt.encode(claims(exp=int(time.time()) - 5), JWT_SECRET),
    "expired long ago": lambda: jwt.encode(claims(exp=1), JWT_SECRET),
    "nbf in future": lambda: jwt.encode(claims(nbf=int(time.time()) + 3600), JWT_SECRET),
    "exp missing": lambda: jwt.encode(claims(exp=None), JWT_SECRET),
    "exp not a number": lambda: forge({"alg": "HS256"}, claims(exp="tomorrow")),
    "exp NaN-ish": lambda: forge({"alg": "HS256"}, {**claims(), "exp": 1e400}),
    "wrong aud": lambda: jwt.encode(claims(aud="other-service"), JWT_SECRET),
    "aud missing": lambda: jwt.encode(claims(aud=None), JWT_SECRET),
    "wrong iss": lambda: jwt.encode(claims(iss="https://evil.example"), JWT_SECRET),
    "iss missing": lambda: jwt.encode(claims(iss=None), JWT_SECRET),
    "user missing": lambda: jwt.encode(claims(sub=None), JWT_SECRET),
    "user 21 chars": lambda: jwt.encode(claims(sub="u" * 21), JWT_SECRET),
    "user 10k chars": lambda: jwt.encode(claims(sub="u" * 10_000), JWT_SECRET),
    "user empty": lambda: jwt.encode(claims(sub=""), JWT_SECRET),
    "user NUL": lambda: jwt.encode(claims(sub="al\x00ice"), JWT_SECRET),
    "user lone surrogate": lambda: forge({"alg": "HS256"}, claims(sub="\ud800")),
    "user list": lambda: forge({"alg": "HS256"}, claims(sub=["alice"])),
    "databases not a list": lambda: jwt.encode(claims(databases="main"), JWT_SECRET),
    "databases of numbers": lambda: jwt.encode(claims(databases=[1]), JWT_SECRET),
    "payload is a list": lambda: f"{b64({'alg': 'HS256'})}.{b64(b'[1]')}.{b64(b'x')}",
    "header not json": lambda: f"{b64(b'{')}.{b64(claims())}.{b64(b'x')}",
    "two dots only": lambda: "..",
    "four segments": lambda: jwt.encode(claims(), JWT_SECRET) + ".x",
    "huge token": lambda: jwt.encode(claims(pad="p" * 200_000), JWT_SECRET + "x"),
}


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize("name", list(TOKENS))
def test_hostile_tokens_are_401_and_write_nothing(client, db, name):
    response = client.put(URL, json=[item(1)], headers=bearer(TOKENS[name]()))
    assert response.status_code == 401, (name, response.get_data()[:300])
    assert response.headers["WWW-Authenticate"]
    assert response.get_json()["error"]["status"] == 401
    assert_no_leak(response, JWT_SECRET)
    assert rows(db) == []


def test_a_token_signed_right_is_accepted(client, db):
    """The control: the same construction with the right key passes (the 401s are real)."""
    response = client.put(URL, json=[item(1)], headers=bearer(forge({"alg": "HS256"}, claims())))
    assert response.status_code == 207


# --- API keys: digests only, every key compared -------------------------------------------

def test_api_keys_exist_only_as_digests(settings):
    for name, (key, _) in API_KEYS.items():
        configured = next(k for k in settings.api_keys if k.name == name)
        assert key.encode() not in repr(configured).encode()
        assert configured.sha256 == hashlib.sha256(key.encode()).digest()
    mapping = settings_mapping({"main": "postgresql://x/y"})
    mapping["api_keys"] = [{"name": "clear", "sha256": "key-in-clear", "databases": ["main"]}]
    with pytest.raises(ConfigError):
        settings_from_mapping(mapping, environ={})


def test_api_key_lookup_compares_every_key_in_constant_time(settings, monkeypatch):
    calls = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", counting)
    for presented in [API_KEYS["payroll"][0], API_KEYS["everything"][0], "wrong", ""]:
        calls.clear()
        auth_module.find_api_key(presented, settings.api_keys)
        # Every configured key is compared, as digests of equal length, match or not.
        assert len(calls) == len(settings.api_keys)
        assert all(len(a) == len(b) == 32 for a, b in calls)


# --- logs and responses keep secrets --------------------------------------------------------

@pytest.fixture
def captured_logs():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


@pytest.fixture
def scratch(pg_admin_dsn):
    """A migrated, seeded database of our own that a test may break."""
    name = f"flexsvc_sec_{uuid.uuid4().hex[:10]}"
    dsn = create_database(pg_admin_dsn, name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        apply_migrations(conn)
        seed_groups(conn)
    yield dsn
    drop_database(pg_admin_dsn, name)


def scratch_app(dsn: str, **databases: str):
    mapping = settings_mapping({"main": dsn, "other": dsn, **databases},
                               pool={"min_size": 0, "max_size": 2, "wait_timeout": 2.0,
                                     "connect_timeout": 2})
    return create_app(settings_from_mapping(mapping, environ={}))


MARK_TIME = "13:37:42"           # a record's content, inside schedule_Date


def test_forced_failures_leak_nothing_to_clients_or_logs(scratch, captured_logs):
    password = "S3cret-Passw0rd-xyz"
    dead = f"postgresql://postgres:{password}@127.0.0.1:{free_port()}/gone"
    app = scratch_app(scratch, dead=dead)
    client = app.test_client()
    secret_key = API_KEYS["everything"][0]
    sent = headers(key="everything")
    token_text = sent["Authorization"].split()[1]
    try:
        with psycopg.connect(scratch, autocommit=True) as conn:
            # The set-based write fails for one item -> item-by-item isolation -> item 500.
            conn.execute("ALTER TABLE group_flex_schedule ADD CONSTRAINT no_p2 "
                         "CHECK (plan_id <> 'P2')")
        item_500 = client.put(URL, json=[item(1), item(2, plan_ID="P2", schedule_Date=(
            f"2026-07-04T{MARK_TIME}"))], headers=sent)
        assert item_500.status_code == 207
        assert [r["status"] for r in item_500.get_json()["data"]] == [201, 500]
        assert_no_leak(item_500, MARK_TIME, "no_p2", "check constraint")

        with psycopg.connect(scratch, autocommit=True) as conn:
            conn.execute("DROP TABLE flex_schedule_type CASCADE")
        whole_500 = client.put(URL, json=[item(3)], headers=sent)
        assert whole_500.status_code == 500
        assert whole_500.get_json()["error"]["status"] == 500
        assert_no_leak(whole_500)

        unavailable = client.put(URL, json=[item(4)], headers={
            **sent, "vbasoftware-database": "dead"})
        assert unavailable.status_code == 503
        assert_no_leak(unavailable, password, "gone", "127.0.0.1")
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert_no_leak(ready, password, "dead", "gone")

        bad_key = client.put(URL, json=[item(5)], headers={**sent, "x-api-key": "guess-me-1"})
        assert bad_key.status_code == 401
        assert_no_leak(bad_key, "guess-me-1")
    finally:
        app.extensions["flexsvc.pools"].close()

    logs = captured_logs.getvalue()
    assert "unhandled error" in logs or "write" in logs     # the failures were logged
    for secret in (secret_key, token_text, "guess-me-1", password, MARK_TIME, JWT_SECRET):
        assert secret not in logs, secret
    for line in logs.splitlines():
        json.loads(line)


# --- SQL injection is inert ---------------------------------------------------------------

INJECTIONS = ["'; DROP TABLE groups;--", "' OR '1'='1", "1); DELETE FROM x;--", "\\'; --",
              "$$; DROP--", "%(user)s", "{0}{1}", "' UNION SELECT 1--", "\";--", "%s%s%s"]


def test_sql_injection_strings_are_stored_verbatim_and_tables_survive(scratch):
    evil_group, evil_plan, evil_year, evil_type = "G'); DROP TABLE x;--", "P' OR '1'='1", "';--", \
        "'; DROP TABLE g;"
    with psycopg.connect(scratch, autocommit=True) as conn:
        conn.execute("INSERT INTO groups VALUES (%s, %s)", (evil_group, "x"))
        conn.execute("INSERT INTO group_flex VALUES (%s, %s, %s, '2026-01-01', '2026-12-31')",
                     (evil_group, evil_plan, evil_year))
        conn.execute("INSERT INTO flex_schedule_type VALUES (%s, 'evil')", (evil_type.upper(),))
        tables_before = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = "
                                     "'public'").fetchone()
    app = scratch_app(scratch)
    client = app.test_client()
    try:
        from urllib.parse import quote
        url = f"/groups/{quote(evil_group, safe='')}/flex-schedules-batch"
        evil_item = {"groupFlexSchedule_Key": 9, "group_ID": evil_group, "plan_ID": evil_plan,
                     "calendar_Year": evil_year, "schedule_Date": "2026-01-15",
                     "schedule_Type": evil_type.lower()}
        response = client.put(url, json=[evil_item], headers=headers(
            **{"X-Request-ID": "x'; DROP TABLE groups;--"}))
        assert response.status_code == 207, response.get_data()
        assert response.get_json()["data"][0]["status"] == 201
        # Injection text in every field of G1 items: 400s or 422s, never an error or a write.
        items = []
        for text in INJECTIONS:
            for field in ("plan_ID", "calendar_Year", "schedule_Type", "schedule_Date",
                          "group_ID", "groupFlexSchedule_Key"):
                items.append(item(0, **{field: text}))
        response = client.put(URL, json=items, headers=headers())
        assert response.status_code == 207
        assert {r["status"] for r in response.get_json()["data"]} <= {400, 422}
        for text in INJECTIONS:
            for response in (
                client.put(f"/groups/{quote(text[:20], safe='')}/flex-schedules-batch",
                           json=[item(1)], headers=headers()),
                client.put(URL, json=[item(1)], headers=headers(database=text)),
                client.put(URL, json=[item(1)], headers={**headers(), "x-api-key": text}),
                client.get(f"/groups/G1/flex-schedules?sortBy={quote(text)}", headers=headers()),
                client.get(f"/groups/G1/flex-schedules?page={quote(text)}", headers=headers()),
                client.get(f"/groups/G1/flex-schedules/{quote(text, safe='')}",
                           headers=headers()),
            ):
                assert response.status_code in (400, 401, 403, 404), (text, response.status_code)
                assert_no_leak(response, echo=text)
    finally:
        app.extensions["flexsvc.pools"].close()
    with psycopg.connect(scratch) as conn:
        stored = conn.execute("SELECT group_id, plan_id, calendar_year, schedule_type FROM "
                              "group_flex_schedule").fetchall()
        assert stored == [(evil_group, evil_plan, evil_year, evil_type.upper())]
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = "
                            "'public'").fetchone() == tables_before
        assert conn.execute("SELECT count(*) FROM groups").fetchone() == (3,)
