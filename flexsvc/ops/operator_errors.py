"""Operator mistakes as one clear line on stderr, never a traceback (SPEC §10).

A bad or missing configuration, an unreachable database, a wrong option: the command line tools
(``flask --app wsgi ...``, the demo) and gunicorn's master print one line starting with
``flexsvc:`` that says what is wrong and where (file, key, database name) and exit non-zero.
Lines never carry a DSN or a secret: database errors are reduced to the server's own message.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import psycopg

PREFIX = "flexsvc: "


class OperatorError(Exception):
    """Something the operator has to fix; the message is the whole story."""


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def database_error(exc: psycopg.Error) -> str:
    """``exc`` as one line: libpq's or the server's primary message, without its DETAIL (which
    may quote record contents). Connection errors name host and port, never the password."""
    primary = exc.diag.message_primary if isinstance(exc, psycopg.Error) else None
    return one_line(primary or str(exc) or exc.__class__.__name__)


def exit_with(message: str, status: int = 1) -> NoReturn:
    """Stop the process with ``message`` as its only line on stderr (2: a usage mistake)."""
    print(PREFIX + one_line(message), file=sys.stderr, flush=True)
    raise SystemExit(status)
