"""What text PostgreSQL can store: one definition for schemas, paths and token claims."""

from __future__ import annotations


def is_utf8_encodable(text: str) -> bool:
    """False for strings with lone surrogates (valid JSON escapes that UTF-8 cannot carry)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_storable_text(text: str) -> bool:
    """True when a text column can hold ``text``: no NUL character and valid UTF-8."""
    return "\x00" not in text and is_utf8_encodable(text)
