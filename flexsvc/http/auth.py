"""Authentication (x-api-key and bearer JWT) and tenancy (which databases a caller may use).

API keys are kept only as SHA-256 digests and compared in constant time against every configured
key. JWTs are verified by PyJWT with the configured algorithm list only (never ``none``), and
``exp`` is required; a token already verified is not verified again, but its ``exp`` is checked
on every use. An unknown database and a forbidden one answer the same 403, so names cannot
be probed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt

from flexsvc.config import ApiKey, AuthSettings, Settings
from flexsvc.rules.text import is_storable_text

MAX_USER_LENGTH = 20
API_KEY_HEADER = "x-api-key"
CHALLENGE = 'Bearer realm="flexsvc", ApiKey realm="flexsvc" header="x-api-key"'


class Unauthorized(Exception):
    """Missing or invalid credentials (401). The message is safe to show."""


class Forbidden(Exception):
    """The database is unknown or not allowed (403). Always the same message."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: recorded as entry_User/update_User and logged (never the credentials)."""

    user: str
    api_key: ApiKey | None
    token_databases: frozenset[str] | None
    #: The JWT's user when the request carried a token (``user`` may be the API key's name).
    token_user: str | None = None

    def may_use(self, database: str) -> bool:
        if self.api_key is not None and not self.api_key.allows(database):
            return False
        if self.token_databases is not None and database not in self.token_databases:
            return False
        return True


def digest_api_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def find_api_key(presented: str, keys: tuple[ApiKey, ...]) -> ApiKey | None:
    """The configured key whose digest matches, comparing against all of them in constant time."""
    digest = digest_api_key(presented)
    found = None
    for key in keys:
        if hmac.compare_digest(digest, key.sha256):
            found = key
    return found


#: Tokens this process verified, with their claims: an integration sends the same token with
#: every call, and verifying it again (base64, two JSON parses, the HMAC or RSA signature,
#: audience, issuer) gives the same answer for the same bytes and settings. Only time changes
#: the answer, so ``exp`` is checked again on every use (``nbf`` and ``iat``, once passed, stay
#: passed). Bounded: emptied when full.
_verified: dict[tuple[str, AuthSettings], dict[str, Any]] = {}
VERIFIED_TOKENS_KEPT = 1024


def decode_token(token: str, auth: AuthSettings) -> dict[str, Any]:
    """Verify a JWT; raise Unauthorized with a short, safe reason."""
    cached = _verified.get((token, auth))
    if cached is not None:
        if int(cached["exp"]) <= time.time() - auth.jwt_leeway_seconds:   # as PyJWT decides
            _verified.pop((token, auth), None)
            raise Unauthorized("The bearer token has expired.")
        return cached
    claims = _verify_token(token, auth)
    if len(_verified) >= VERIFIED_TOKENS_KEPT:
        _verified.clear()
    _verified[(token, auth)] = claims
    return claims


def _verify_token(token: str, auth: AuthSettings) -> dict[str, Any]:
    key = auth.jwt_verification_key
    if key is None:
        raise Unauthorized("Bearer tokens are not configured.")
    try:
        return jwt.decode(
            token, key, algorithms=list(auth.jwt_algorithms),
            audience=auth.jwt_audience, issuer=auth.jwt_issuer,
            leeway=auth.jwt_leeway_seconds,
            options={"require": ["exp"], "verify_aud": auth.jwt_audience is not None},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("The bearer token has expired.") from exc
    except jwt.ImmatureSignatureError as exc:
        raise Unauthorized("The bearer token is not valid yet.") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthorized("The bearer token is not valid.") from exc


def authenticate(headers: Any, settings: Settings) -> Principal:
    """Check the request's credentials against ``settings.auth.require``."""
    auth = settings.auth
    raw_key = headers.get(API_KEY_HEADER)
    raw_auth = headers.get("Authorization")
    api_key = None
    claims = None
    if raw_key is not None:
        api_key = find_api_key(raw_key, settings.api_keys)
        if api_key is None:
            raise Unauthorized("The API key is not valid.")
    if raw_auth is not None:
        scheme, _, token = raw_auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("The Authorization header must be 'Bearer <token>'.")
        claims = decode_token(token.strip(), auth)
    if auth.require == "both":
        if api_key is None:
            raise Unauthorized("An x-api-key header is required.")
        if claims is None:
            raise Unauthorized("A bearer token is required.")
    elif api_key is None and claims is None:
        raise Unauthorized("An x-api-key header or a bearer token is required.")

    token_databases = None
    if claims is not None:
        user = claims.get(auth.jwt_user_claim)
        if not isinstance(user, str) or not user or len(user) > MAX_USER_LENGTH:
            raise Unauthorized(f"The token's {auth.jwt_user_claim!r} claim must be a user name "
                               f"of 1..{MAX_USER_LENGTH} characters.")
        if not is_storable_text(user):
            raise Unauthorized("The token's user claim is not valid.")
        if "databases" in claims:
            listed = claims["databases"]
            if not isinstance(listed, list) or not all(isinstance(d, str) for d in listed):
                raise Unauthorized("The token's 'databases' claim must be a list of names.")
            token_databases = frozenset(listed)
    else:
        assert api_key is not None
        user = api_key.name
    return Principal(user=user, api_key=api_key, token_databases=token_databases,
                     token_user=user if claims is not None else None)


def authorize_database(principal: Principal, database: str | None, settings: Settings) -> str:
    """Return the database name if configured and allowed; else raise Forbidden."""
    if database is None or database not in settings.databases or not principal.may_use(database):
        raise Forbidden()
    return database


def new_api_key() -> tuple[str, str]:
    """A fresh random API key and its SHA-256 hex digest (the only form kept in config)."""
    key = "fsk_" + secrets.token_urlsafe(32)
    return key, digest_api_key(key).hex()


def issue_token(auth: AuthSettings, user: str, *, ttl_seconds: int = 3600,
                databases: list[str] | None = None, private_key: str | None = None) -> str:
    """A signed JWT for ``user`` (development and tests; production tokens come from an IdP)."""
    now = int(time.time())
    claims: dict[str, Any] = {auth.jwt_user_claim: user, "iat": now, "nbf": now,
                              "exp": now + ttl_seconds}
    if auth.jwt_issuer:
        claims["iss"] = auth.jwt_issuer
    if auth.jwt_audience:
        claims["aud"] = auth.jwt_audience
    if databases is not None:
        claims["databases"] = databases
    key = auth.jwt_secret if auth.jwt_algorithms[0].startswith("HS") else private_key
    if key is None:
        raise ValueError("issuing asymmetric tokens needs the private key")
    return jwt.encode(claims, key, algorithm=auth.jwt_algorithms[0])
