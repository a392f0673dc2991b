"""Hostile input never gives a 5xx, a hang, or a write of a bad item (SPEC §4, §5, §7).

Three layers: (1) hostile ITEMS inside a well-formed request, each of which must come back as a
per-item 400 while a valid neighbour is still written; (2) hostile BODIES (bytes), which must
give a whole-request 4xx and write nothing; (3) hostile REQUESTS on the wire (paths, query
strings, headers, framing) sent as raw bytes to a real gunicorn, where a rejection by gunicorn
itself is fine but a 5xx, a hang or a dead server is not.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.conftest import settings_mapping
from tests.helpers import headers, item, rows
from tests.servers import run_gunicorn, write_config

URL = "/groups/G1/flex-schedules-batch"
MB = 1024 * 1024

# --- values that do not belong in a field ---------------------------------------------------

NOT_A_STRING = [None, True, False, 0, -1, 1.5, 10**30, [], ["P1"], {}, {"value": "P1"},
                [[[[["deep"]]]]]]
BAD_TEXT = ["", "\x00", "P\x001", "\ud800", "a\udfffb", "x" * MB]
NOT_A_KEY = [None, True, False, "1", "0", "", 1.0, 0.0, -1, -0.5, 2**31, 2**63, 10**30,
             -(2**63) - 1, [], [1], {}, {"key": 1}, "\ud800", "x" * MB]
NOT_A_DATE = ["", "2026-02-30", "2026-13-01", "0000-01-01", "10000-01-01",
              "2026-01-15T25:00:00", "2026-01-15T00:00:00+25:00", "9999-12-31T23:30:00-01:00",
              "0001-01-01T00:30:00+01:00", "２０２６-01-15", "2026-01-15\n",
              "2026-01-15 00:00:00 PST", "2026-01-15T00:00:00.1234567890", "x" * MB,
              "2026-01-15\x00", "\ud800", "now", "1e400"]


def hostile_items() -> list[tuple[str, object]]:
    """(description, item) pairs; every one is an invalid GroupFlexSchedule."""
    cases: list[tuple[str, object]] = []
    for field, bad_values in [
        ("plan_ID", NOT_A_STRING + BAD_TEXT + ["P" * 21]),
        ("calendar_Year", NOT_A_STRING + BAD_TEXT + ["20261"]),
        ("group_ID", NOT_A_STRING + BAD_TEXT + ["G" * 21, "g1", "G1 ", "G2"]),
        ("schedule_Type", NOT_A_STRING + BAD_TEXT + ["M" * 17]),
        ("schedule_Date", NOT_A_STRING + NOT_A_DATE),
        ("groupFlexSchedule_Key", NOT_A_KEY),
    ]:
        for value in bad_values:
            cases.append((f"{field}={str(value)[:30]!r}", item(7, **{field: value})))
        base = item(7)
        del base[field]
        cases.append((f"missing {field}", base))
    cases += [(f"item is {str(v)[:20]!r}", v)
              for v in [None, 0, 1, "item", "", [], [item(7)], True, 1.5, {}]]
    cases.append(("null everywhere", dict.fromkeys(item(7))))
    cases.append(("megabyte field name", {**item(7, plan_ID=None), "k" * MB: "v"}))
    return cases


HOSTILE_ITEMS = hostile_items()


def put_raw(client, body: bytes | str, **header_args):
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    return client.put(URL, data=body, headers=headers(**header_args))


def put_json(client, value, query: str = ""):
    """The stdlib encoder: it writes big integers and lone surrogates (as \\u escapes), which
    are valid JSON that orjson (the app's encoder) refuses to produce."""
    return client.put(URL + query, data=json.dumps(value), headers=headers())


def assert_problem(response, status: int) -> None:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    body = response.get_json()
    assert body["data"] is None and body["error"]["status"] == status
    assert body["debug"]["activityID"]


def test_every_hostile_item_is_a_400_and_its_valid_neighbour_is_written(client, db):
    """All hostile items in ONE batch, between two valid ones: 400 each, 201 for the valid."""
    batch = [item(1)] + [case for _, case in HOSTILE_ITEMS] + [item(2)]
    started = time.monotonic()
    response = put_json(client, batch)
    assert time.monotonic() - started < 30
    assert response.status_code == 207
    results = response.get_json()["data"]
    assert len(results) == len(batch)
    assert results[0]["status"] == 201 and results[-1]["status"] == 201
    for (name, _), result in zip(HOSTILE_ITEMS, results[1:-1], strict=True):
        assert result["status"] == 400, (name, result)
        assert result["body"].startswith("Invalid GroupFlexSchedule"), (name, result)
        assert len(result["body"]) < 2000, name     # no megabyte echo
        value = result["id"][0]["value"]
        assert value is None or isinstance(value, (int, bool, float)) or len(value) <= 100
    assert [r["group_flex_schedule_key"] for r in rows(db)] == [1, 2]


@pytest.mark.parametrize("name,case", HOSTILE_ITEMS[::3], ids=[n for n, _ in HOSTILE_ITEMS[::3]])
def test_hostile_item_alone(client, db, name, case):
    """Each (a third of the corpus, spread evenly) alone as well, also in atomic mode."""
    for query in ("", "?atomic=true", "?dryRun=true"):
        response = put_json(client, [case], query)
        assert response.status_code == 207, (name, response.get_data()[:300])
        assert [r["status"] for r in response.get_json()["data"]] == [400]
    assert rows(db) == []


# Raw JSON text a JSON encoder would refuse to produce; "{}" is replaced by a valid item's
# other fields. Expected: whole-request 400 ("malformed") or a 207 whose item is a 400.
RAW_ITEMS = {
    "key 1e400": '{"groupFlexSchedule_Key": 1e400, {}}',
    "key -1e400": '{"groupFlexSchedule_Key": -1e400, {}}',
    "key 1e-400": '{"groupFlexSchedule_Key": 1e-400, {}}',
    "key 4000 digits": '{"groupFlexSchedule_Key": ' + "9" * 4000 + ", {}}",
    "key 5000 digits": '{"groupFlexSchedule_Key": ' + "9" * 5000 + ", {}}",
    "key NaN": '{"groupFlexSchedule_Key": NaN, {}}',
    "key Infinity": '{"groupFlexSchedule_Key": Infinity, {}}',
    "key -Infinity": '{"groupFlexSchedule_Key": -Infinity, {}}',
    "key 7.0": '{"groupFlexSchedule_Key": 7.0, {}}',
    "key 7e0": '{"groupFlexSchedule_Key": 7e0, {}}',
    "key 007": '{"groupFlexSchedule_Key": 007, {}}',
    "key 0x7": '{"groupFlexSchedule_Key": 0x7, {}}',
    "plan lone high surrogate": '{"groupFlexSchedule_Key": 7, "plan_ID": "\\ud800", {}}',
    "plan lone low surrogate": '{"groupFlexSchedule_Key": 7, "plan_ID": "x\\udc00", {}}',
    "plan escaped NUL": '{"groupFlexSchedule_Key": 7, "plan_ID": "\\u0000", {}}',
    "surrogate field name": '{"\\ud800": 1, "groupFlexSchedule_Key": 7, "plan_ID": 5, {}}',
    "raw control char": '{"groupFlexSchedule_Key": 7, "plan_ID": "P\x011", {}}',
    "single quotes": "{'groupFlexSchedule_Key': 7, {}}",
    "trailing comma": '{"groupFlexSchedule_Key": 7, {},}',
    "comment": '{"groupFlexSchedule_Key": 7, /* c */ {}}',
    "deep in a field": '{"groupFlexSchedule_Key": 7, "plan_ID": ' + "[" * 3000 + "]" * 3000
                       + ", {}}",
    "deep object field": '{"groupFlexSchedule_Key": 7, "plan_ID": ' + '{"a":' * 900 + "1"
                         + "}" * 900 + ", {}}",
}


def _valid_rest(exclude: str) -> str:
    rest = {k: v for k, v in item(7).items() if k != "groupFlexSchedule_Key"}
    if "plan_ID" in exclude:
        rest.pop("plan_ID")
    return json.dumps(rest)[1:-1]


@pytest.mark.parametrize("name", list(RAW_ITEMS))
def test_raw_json_items(client, db, name):
    text = RAW_ITEMS[name].replace("{}}", _valid_rest(RAW_ITEMS[name]) + "}")
    response = put_raw(client, "[" + text + "]")
    assert response.status_code in (207, 400), (name, response.get_data()[:300])
    if response.status_code == 207:
        assert [r["status"] for r in response.get_json()["data"]] == [400], name
    else:
        assert_problem(response, 400)
        assert "Malformed JSON" in response.get_json()["error"]["detail"]
    assert rows(db) == []


def test_duplicate_json_keys_last_one_wins(client, db):
    """Duplicate names (also differing only in case) behave as in ASP.NET: the last one wins."""
    body = ('[{"groupFlexSchedule_Key": "junk", "groupFlexSchedule_Key": 5, '
            + _valid_rest("") + ', "plan_ID": {"x": 1}, "PLAN_id": "P2"}, '
            '{"groupFlexSchedule_Key": 6, "groupflexschedule_key": [1], ' + _valid_rest("")
            + "}]")
    response = put_raw(client, body)
    assert [r["status"] for r in response.get_json()["data"]] == [201, 400]
    assert [(r["group_flex_schedule_key"], r["plan_id"]) for r in rows(db)] == [(5, "P2")]


BAD_BODIES = {
    "empty": b"",
    "whitespace": b" \r\n\t ",
    "null": b"null",
    "true": b"true",
    "number": b"7",
    "string": b'"[]"',
    "object": b'{"groupFlexSchedule_Key": 7}',
    "NaN": b"NaN",
    "Infinity array": b"[Infinity]",
    "1e400 array of NaN": b"[1e400, NaN]",
    "invalid utf-8 byte": b'[{"plan_ID": "\xff"}]',
    "truncated utf-8": b'[{"plan_ID": "\xc3"}]',
    "overlong utf-8 slash": b'[{"plan_ID": "\xc0\xaf"}]',
    "utf-8 encoded surrogate": b'[{"plan_ID": "\xed\xa0\x80"}]',
    "latin-1 body": '[{"plan_ID": "é"}]'.encode("latin-1"),
    "utf-16 body": "[]".encode("utf-16"),
    "utf-8 BOM": b"\xef\xbb\xbf[]",
    "NUL byte": b"[]\x00",
    "trailing garbage": b"[] x",
    "two documents": b"[][]",
    "unterminated": b'[{"groupFlexSchedule_Key": 1,',
    "deep arrays": b"[" * 100_000 + b"]" * 100_000,
    "deep objects": b'[{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"]",
    "unbalanced deep": b"[" * 200_000,
    "huge number text": b"[" + b"9" * 1_000_000 + b"]",
    "array of arrays": None,   # a valid body: every item a 400 (checked below)
}


@pytest.mark.parametrize("name", [n for n, b in BAD_BODIES.items() if b is not None])
def test_bad_bodies_are_400_and_write_nothing(client, db, name):
    started = time.monotonic()
    response = put_raw(client, BAD_BODIES[name])
    assert time.monotonic() - started < 20
    assert_problem(response, 400)
    assert rows(db) == []


def test_array_of_arrays_and_of_nulls(client, db):
    response = put_json(client, [[item(1)], None, [], "x" * MB])
    assert [r["status"] for r in response.get_json()["data"]] == [400] * 4
    assert rows(db) == []


def test_size_limits(client, db):
    """Over the byte limit: 413 (also when Content-Length lies low); over the item limit: 413;
    just under the byte limit with megabyte strings: 207 with 400s."""
    too_big = b"[" + b" " * (16 * MB) + b"]"
    assert_problem(put_raw(client, too_big), 413)
    assert_problem(client.put(URL, json=[item(0)] * 10_001, headers=headers()), 413)
    near = [item(k, plan_ID="x" * (3 * MB)) for k in range(1, 5)]
    response = client.put(URL, json=near, headers=headers())
    assert [r["status"] for r in response.get_json()["data"]] == [400] * 4
    assert rows(db) == []


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/xml", "application/json-patch", "application/jsonx", "json", "",
    "application/json; charset=\x01", "APPLICATION/JSON; charset=utf-16",
])
def test_content_types(client, db, content_type):
    """Only JSON types are read; anything else is 415 (or 400 for a broken JSON type)."""
    response = client.put(URL, data=json.dumps([item(1)]), headers={
        **headers(), "Content-Type": content_type})
    assert response.status_code in (207, 400, 415), response.get_data()[:300]
    if response.status_code != 207:
        assert_problem(response, response.status_code)


@pytest.mark.parametrize("query", [
    "atomic=%00", "atomic=%FF", "atomic=yes%00", "atomic=" + "t" * 10_000, "dryRun=[]",
    "atomic=true&atomic=false", "dryRun=1&dryRun=%ED%A0%80", "%00=%00", "a" * 5000 + "=1",
    "atomic", "atomic=", "atomic=TRUE", "dryRun=on", "=" * 100, "&" * 1000,
    "atomic=1;DROP TABLE groups", "atomic[]=true", "atomic=%u0074rue",
])
def test_odd_query_strings(client, db, query):
    response = client.put(f"{URL}?{query}", json=[item(1)], headers=headers())
    assert response.status_code in (207, 400), (query, response.get_data()[:300])
    if response.status_code == 400:
        assert_problem(response, 400)
        assert rows(db) == []


@pytest.mark.parametrize("path", [
    "/groups/%00/flex-schedules-batch", "/groups/G1%00/flex-schedules-batch",
    "/groups/%ED%A0%80/flex-schedules-batch", "/groups/%FF%FE/flex-schedules-batch",
    "/groups/../flex-schedules-batch", "/groups/%2e%2e/flex-schedules-batch",
    "/groups/G1/../G2/flex-schedules-batch", "/groups/G1%2F..%2FG2/flex-schedules-batch",
    "/groups//flex-schedules-batch", "/groups/" + "G" * 21 + "/flex-schedules-batch",
    "/groups/" + "G" * 10_000 + "/flex-schedules-batch", "/groups/Ünïcødé/flex-schedules-batch",
    "/groups/😀/flex-schedules-batch", "/groups/G1'%20OR%201=1--/flex-schedules-batch",
    "/groups/G1/flex-schedules-batch/", "/groups/G1/flex-schedules-batch/%00",
    "/groups/G1/FLEX-SCHEDULES-BATCH", "/" + "a/" * 3000, "/%00", "/%ED%A0%80", "/readyz%00",
])
def test_odd_paths(client, db, path):
    for method in ("PUT", "GET", "POST", "DELETE", "PATCH", "OPTIONS"):
        response = client.open(path, method=method, json=[item(1)], headers=headers())
        assert response.status_code < 500, (method, path, response.get_data()[:300])
        if response.status_code >= 400:
            assert_problem(response, response.status_code)
    assert rows(db) == []


@pytest.mark.parametrize("name,value", [
    ("vbasoftware-database", "main\x01"), ("vbasoftware-database", "main\x7f"),
    ("vbasoftware-database", "m" * 100_000), ("vbasoftware-database", "ｍａｉｎ"),
    ("vbasoftware-database", "main\t"), ("vbasoftware-database", "MAIN"),
    ("vbasoftware-database", "../main"), ("vbasoftware-database", "main,other"),
    ("vbasoftware-database", "main\x00"),
    ("x-api-key", "\x00"), ("x-api-key", "k" * 1_000_000), ("x-api-key", "ÿ" * 100),
    ("x-api-key", "key-payroll-0123456789\x00"), ("x-api-key", "key-payroll-0123456789 "),
    ("Authorization", "Bearer " + "a" * 1_000_000), ("Authorization", "Bearer \x01"),
    ("Authorization", "Bearer a.b.c"), ("Authorization", "Bearer ...."),
    ("Authorization", "Basic dXNlcjpwYXNz"), ("Authorization", "Bearer"),
    ("Authorization", "Bearer ÿÿÿ.ÿÿÿ.ÿÿÿ"),
    ("X-Request-ID", "\x01\x02"), ("X-Request-ID", "r" * 100_000), ("X-Request-ID", "a b"),
    ("X-Request-ID", "ÿ"), ("Content-Length", "-1"), ("Content-Length", "abc"),
    ("Content-Length", "99999999999999999999"), ("Content-Type", "application/json" * 1000),
])
def test_odd_header_values(client, db, name, value):
    """Invalid credentials or tenants are 4xx envelopes, never 5xx; valid ones still work."""
    response = client.put(URL, data=json.dumps([item(1)]), headers={**headers(), name: value})
    assert response.status_code < 500, response.get_data()[:300]
    if response.status_code != 207:
        assert_problem(response, response.status_code)
    activity = response.headers.get("X-Activity-ID", "")
    assert 0 < len(activity) <= 128 and activity.isprintable()
    if name in ("vbasoftware-database", "x-api-key", "Authorization"):
        assert response.status_code in (400, 401, 403), (name, value[:20])
        assert rows(db) == []


# --- on the wire: raw bytes to a real gunicorn -------------------------------------------------

@pytest.fixture(scope="module")
def live(tenant_dsns, tmp_path_factory):
    config = write_config(tmp_path_factory.mktemp("hostile") / "flexsvc.toml",
                          settings_mapping(tenant_dsns))
    with run_gunicorn(config, workers=1, threads=4) as server:
        yield server


def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` and read until the server closes or ``timeout`` (then fail: a hang)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError as exc:
                raise AssertionError("the server did not answer (hang)") from exc
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def request_bytes(method: str, path: bytes, extra: list[bytes] = (), body: bytes = b"[]",
                  auth: bool = True) -> bytes:
    lines = [method.encode() + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1",
             b"Connection: close", b"Content-Type: application/json"]
    if auth:
        lines += [f"{k}: {v}".encode() for k, v in headers().items() if k != "Content-Type"]
    lines += list(extra)
    if not any(x.lower().startswith((b"content-length", b"transfer-encoding")) for x in extra):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


B = b"/groups/G1/flex-schedules-batch"
WIRE_CASES = {
    "nul in path": request_bytes("PUT", b"/groups/G\x001/flex-schedules-batch"),
    "raw utf-8 path": request_bytes("PUT", "/groups/Ü/flex-schedules-batch".encode()),
    "raw invalid utf-8 path": request_bytes("PUT", b"/groups/\xff\xfe/flex-schedules-batch"),
    "encoded invalid utf-8 path": request_bytes("PUT", b"/groups/%ff/flex-schedules-batch"),
    "dot segments": request_bytes("PUT", b"/groups/G2/../G1/flex-schedules-batch"),
    "absolute-form": request_bytes("PUT", b"http://evil.example" + B),
    "8 KB path": request_bytes("PUT", b"/groups/" + b"G" * 8000 + b"/flex-schedules-batch"),
    "100 KB path": request_bytes("GET", b"/" + b"a" * 100_000),
    "100 KB query": request_bytes("PUT", B + b"?atomic=" + b"t" * 100_000),
    "control char header": request_bytes("PUT", B, [b"vbasoftware-database: ma\x01in"]),
    "DEL in header": request_bytes("PUT", B, [b"X-Request-ID: a\x7fb"]),
    "bare CR in header": request_bytes("PUT", B, [b"X-Thing: a\rb"]),
    "NUL in header": request_bytes("PUT", B, [b"x-api-key: a\x00b"]),
    "latin-1 header": request_bytes("PUT", B, [b"X-Request-ID: \xff\xfe"]),
    "100 KB header": request_bytes("PUT", B, [b"X-Big: " + b"h" * 100_000]),
    "300 headers": request_bytes("PUT", B, [f"X-H{i}: v".encode() for i in range(300)]),
    "space before colon": request_bytes("PUT", B, [b"x-api-key : nope"]),
    "no colon": request_bytes("PUT", B, [b"garbage-header-line"]),
    "obs-fold": request_bytes("PUT", B, [b"X-Folded: a", b" continued"]),
    "bad content-length": request_bytes("PUT", B, [b"Content-Length: abc"]),
    "negative content-length": request_bytes("PUT", B, [b"Content-Length: -2"]),
    "two content-lengths": request_bytes("PUT", B, [b"Content-Length: 2", b"Content-Length: 3"]),
    "huge content-length": request_bytes("PUT", B, [b"Content-Length: 99999999999999"]),
    "CL and TE (smuggling)": request_bytes("PUT", B, [b"Content-Length: 2",
                                                      b"Transfer-Encoding: chunked"],
                                           body=b"0\r\n\r\n"),
    "bad chunk size": request_bytes("PUT", B, [b"Transfer-Encoding: chunked"],
                                    body=b"zz\r\n[]\r\n0\r\n\r\n"),
    "chunked ok": request_bytes("PUT", B, [b"Transfer-Encoding: chunked"],
                                body=b"2\r\n[]\r\n0\r\n\r\n"),
    "unknown TE": request_bytes("PUT", B, [b"Transfer-Encoding: gzip, identity"]),
    "HTTP/9.9": b"PUT " + B + b" HTTP/9.9\r\nHost: x\r\nContent-Length: 2\r\n\r\n[]",
    "HTTP/0.9": b"GET /healthz\r\n\r\n",
    "lowercase method": request_bytes("put", B),
    "unknown method": request_bytes("BREW", B),
    # A TLS ClientHello to the plain-HTTP port, ended so a line-reading server sees a line.
    "garbage request line": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64
                            + b"\r\n\r\n",
}


@pytest.mark.slow
def test_hostile_requests_on_the_wire(live, db):
    """Raw requests gunicorn and the app must survive: a status below 500, always an answer."""
    answered = {}
    for name, data in WIRE_CASES.items():
        reply = raw_exchange(live.port, data)
        status_line = reply.split(b"\r\n", 1)[0]
        if not reply:
            answered[name] = "closed"      # gunicorn may drop garbage without a reply
            continue
        assert status_line.startswith(b"HTTP/1."), (name, reply[:200])
        status = int(status_line.split()[1])
        assert status < 500, (name, reply[:500])
        answered[name] = status
    assert answered["chunked ok"] == 207
    # Still healthy, nothing written, no request was logged as an error.
    assert raw_exchange(live.port, request_bytes("GET", b"/healthz")).startswith(
        b"HTTP/1.1 200")
    assert rows(db) == []
    errors = [e for e in live.log_lines() if e.get("level") in ("error", "critical")
              and e.get("logger", "").startswith("flexsvc")]
    assert not errors, errors[:3]


def test_key_space_exhaustion_is_an_item_409_not_a_500(client, db):
    """Creating key 2147483647 explicitly pushes the key sequence to its end; key-0 creates then
    get a per-item 409 (send an explicit key), never a whole-request 500."""
    response = put_json(client, [item(0), item(2_147_483_646)])
    assert [r["status"] for r in response.get_json()["data"]] == [201, 201]
    response = put_json(client, [item(0), item(0), item(5), item(0)])
    results = response.get_json()["data"]
    assert [r["status"] for r in results] == [201, 409, 201, 409]
    assert results[0]["id"][0]["value"] == 2_147_483_647
    assert "explicit key" in results[1]["body"]
    atomic = put_json(client, [item(6), item(0)], "?atomic=true")
    assert [r["status"] for r in atomic.get_json()["data"]] == [424, 409]
    assert [r["group_flex_schedule_key"] for r in rows(db)] == [1, 5, 2_147_483_646,
                                                                2_147_483_647]


@pytest.mark.slow
def test_stalled_uploads_cannot_hold_the_server(tenant_dsns, tmp_path, db):
    """Authenticated clients that stop sending mid-body (or vanish without closing) are dropped
    with 400 after limits.body_stall_seconds, so they cannot pin every server thread."""
    mapping = settings_mapping(tenant_dsns, limits={"body_stall_seconds": 2})
    config = write_config(tmp_path / "flexsvc.toml", mapping)
    head = request_bytes("PUT", B, [b"Content-Length: 100000"], body=b"")
    head = head.replace(b"Content-Length: 2\r\n", b"")
    with run_gunicorn(config, workers=1, threads=2) as server:
        stalled = [socket.create_connection(("127.0.0.1", server.port), timeout=15)
                   for _ in range(3)]            # more stalled uploads than threads
        try:
            for sock in stalled:
                sock.sendall(head + b'[{"groupFlexSchedule_Key": 1')
            time.sleep(0.5)
            started = time.monotonic()
            assert raw_exchange(server.port, request_bytes("GET", b"/healthz")).startswith(
                b"HTTP/1.1 200")
            assert time.monotonic() - started < 10
            for sock in stalled:
                reply = sock.recv(65536)
                assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
                assert b'"status":400' in reply          # the envelope, not a dropped socket
        finally:
            for sock in stalled:
                sock.close()
    assert rows(db) == []
