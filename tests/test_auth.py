"""SPEC §3: x-api-key and bearer JWT, require both/either, user claim, database allow-lists."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from flexsvc import create_app
from flexsvc.config import settings_from_mapping
from flexsvc.http.auth import digest_api_key, find_api_key
from tests.conftest import settings_mapping
from tests.helpers import (
    API_KEYS,
    JWT_SECRET,
    claims,
    headers,
    item,
    put_batch,
    rows,
    statuses,
)

URL = "/groups/G1/flex-schedules-batch"


def with_token(encoded: str, **kwargs) -> dict[str, str]:
    hdrs = headers(user=None, **kwargs)
    hdrs["Authorization"] = f"Bearer {encoded}"
    return hdrs


def signed(**overrides) -> str:
    return jwt.encode(claims(**overrides), JWT_SECRET, algorithm="HS256")


def test_both_credentials_are_accepted(client, db):
    assert statuses(put_batch(client, [item(1)])) == [201]


@pytest.mark.parametrize("missing", ["key", "user"])
def test_require_both_rejects_one_alone(client, db, missing):
    response = put_batch(client, [item(1)], **{missing: None})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"]
    assert rows(db) == []


@pytest.mark.parametrize("token, reason", [
    (lambda: signed(exp=int(time.time()) - 60), "expired"),
    (lambda: signed(nbf=int(time.time()) + 600), "not valid yet"),
    (lambda: signed(aud="someone-else"), "not valid"),
    (lambda: signed(iss="https://evil.test"), "not valid"),
    (lambda: signed(exp=None), "not valid"),
    (lambda: jwt.encode(claims(), "a-different-secret-of-enough-length!!", algorithm="HS256"),
     "not valid"),
    (lambda: jwt.encode(claims(), JWT_SECRET, algorithm="HS512"), "not valid"),
    (lambda: jwt.encode(claims(), None, algorithm="none"), "not valid"),
    (lambda: "not.a.jwt", "not valid"),
    (lambda: signed(sub=None), "claim"),
    (lambda: signed(sub="u" * 21), "claim"),
    (lambda: signed(sub=""), "claim"),
    (lambda: signed(sub=12345), "not valid"),  # PyJWT itself requires a string "sub"
    (lambda: signed(databases="main"), "databases"),
])
def test_invalid_tokens_are_401(client, db, token, reason):
    response = client.put(URL, json=[item(1)], headers=with_token(token()))
    assert response.status_code == 401, response.get_json()
    assert reason in response.get_json()["error"]["detail"]
    assert rows(db) == []


def test_user_claim_of_20_characters_is_recorded_uncut(client, db):
    response = client.put(URL, json=[item(1)], headers=with_token(signed(sub="u" * 20)))
    assert statuses(response) == [201]
    assert rows(db)[0]["entry_user"] == "u" * 20


def test_malformed_authorization_header_is_401(client):
    hdrs = headers()
    hdrs["Authorization"] = "Basic dXNlcjpwYXNz"
    assert client.put(URL, json=[], headers=hdrs).status_code == 401


def test_invalid_api_key_is_401(client):
    hdrs = headers()
    hdrs["x-api-key"] = "guess"
    response = client.put(URL, json=[], headers=hdrs)
    assert response.status_code == 401
    assert "guess" not in response.get_data(as_text=True)


def test_databases_claim_narrows_the_key(client, db):
    narrowed = with_token(signed(databases=["other"]), key="everything", database="main")
    assert client.put(URL, json=[item(1)], headers=narrowed).status_code == 403
    allowed = with_token(signed(databases=["main"]), key="everything", database="main")
    assert statuses(client.put(URL, json=[item(1)], headers=allowed)) == [201]


def test_key_for_another_database_is_403(client, db):
    response = put_batch(client, [item(1)], key="other-tenant", database="main")
    assert response.status_code == 403
    assert rows(db) == []


def test_wildcard_key_reaches_every_database(client, db):
    # Group G1 exists only in tenant "main": a 404 proves the request reached "other".
    response = put_batch(client, [], key="everything", database="other")
    assert response.status_code == 404


def test_api_keys_are_matched_by_digest():
    from flexsvc.config import ApiKey
    keys = (ApiKey("a", digest_api_key("k1"), frozenset(["*"])),
            ApiKey("b", digest_api_key("k2"), frozenset(["*"])))
    assert find_api_key("k2", keys).name == "b"
    assert find_api_key("k3", keys) is None


@pytest.fixture
def either_client(tenant_dsns, clean_db):
    mapping = settings_mapping(tenant_dsns)
    mapping["auth"] = dict(mapping["auth"], require="either")
    app = create_app(settings_from_mapping(mapping, environ={}))
    yield app.test_client()
    app.extensions["flexsvc.pools"].close()


def test_require_either_accepts_key_alone_and_records_key_name(either_client, db):
    response = either_client.put(URL, json=[item(1)], headers=headers(user=None))
    assert statuses(response) == [201]
    assert rows(db)[0]["entry_user"] == "payroll"


def test_require_either_accepts_token_alone(either_client, db):
    response = either_client.put(URL, json=[item(1)], headers=headers(key=None, user="carol"))
    assert statuses(response) == [201]
    assert rows(db)[0]["entry_user"] == "carol"


def test_require_either_still_rejects_an_invalid_credential(either_client):
    hdrs = headers(user=None)
    hdrs["Authorization"] = "Bearer garbage"
    assert either_client.put(URL, json=[], headers=hdrs).status_code == 401
    assert either_client.put(URL, json=[], headers=headers(key=None, user=None)).status_code == 401


@pytest.fixture
def rsa_setup(tenant_dsns, clean_db, tmp_path):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "key.pem").write_bytes(public_pem)
    mapping = settings_mapping(tenant_dsns)
    mapping["auth"] = {"require": "both", "jwt_algorithms": ["RS256"],
                       "jwt_public_key_file": "key.pem", "jwt_user_claim": "preferred_username"}
    app = create_app(settings_from_mapping(mapping, base_dir=tmp_path, environ={}))
    yield app.test_client(), private, public_pem
    app.extensions["flexsvc.pools"].close()


def test_rs256_tokens_and_custom_user_claim(rsa_setup, db):
    client, private, public_pem = rsa_setup
    now = int(time.time())
    good = jwt.encode({"preferred_username": "dave", "exp": now + 60}, private, algorithm="RS256")
    response = client.put(URL, json=[item(1)], headers=with_token(good))
    assert statuses(response) == [201]
    assert rows(db)[0]["entry_user"] == "dave"
    # Algorithm confusion: an HS256 token keyed with the public key must not pass. PyJWT
    # refuses to sign HS256 with a PEM key, so the attacker's token is forged by hand.
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"preferred_username": "eve", "exp": now + 60}).encode())
    sig = b64(hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
    forged = f"{head}.{body}.{sig}"
    assert client.put(URL, json=[item(2)], headers=with_token(forged)).status_code == 401
    assert len(rows(db)) == 1


def test_api_key_values_never_appear_in_config(settings):
    for name, (key, _) in API_KEYS.items():
        configured = next(k for k in settings.api_keys if k.name == name)
        assert configured.sha256 == digest_api_key(key)
        assert key.encode() not in configured.sha256


def test_a_token_accepted_before_is_refused_once_it_expires(client, db):
    """Verified tokens are remembered (flexsvc.http.auth), but never past their ``exp``."""
    token = signed(exp=int(time.time()) + 2)
    assert statuses(client.put(URL, json=[item(1)], headers=with_token(token))) == [201]
    assert statuses(client.put(URL, json=[item(1)], headers=with_token(token))) == [200]
    time.sleep(max(0.0, jwt.decode(token, options={"verify_signature": False})["exp"]
                   - time.time()) + 0.2)
    late = client.put(URL, json=[item(2)], headers=with_token(token))
    assert late.status_code == 401
    assert "expired" in late.get_json()["error"]["detail"]
    assert [r["group_flex_schedule_key"] for r in rows(db)] == [1]


def test_a_remembered_token_is_verified_again_under_other_settings(client, tenant_dsns, db):
    """The same token, once accepted, is refused by an app configured with another secret."""
    token = signed()
    assert statuses(client.put(URL, json=[item(1)], headers=with_token(token))) == [201]
    mapping = settings_mapping(tenant_dsns)
    mapping["auth"] = dict(mapping["auth"], jwt_secret="another-secret-of-sufficient-length!!")
    other = create_app(settings_from_mapping(mapping, environ={}))
    try:
        refused = other.test_client().put(URL, json=[item(2)], headers=with_token(token))
    finally:
        other.extensions["flexsvc.pools"].close()
    assert refused.status_code == 401
    assert [r["group_flex_schedule_key"] for r in rows(db)] == [1]
