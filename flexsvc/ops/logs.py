"""Structured JSON logs, one object per line, with the activity ID — also for gunicorn's own logs.

Credentials and record contents are never logged: callers log names, counts and statuses.
``gunicorn.conf.py`` installs :func:`gunicorn_logconfig` so gunicorn's error log and access log
come out in the same format as the application's lines.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

import orjson

from flexsvc.config import ConfigError
from flexsvc.http.activity import current_activity_id

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# PostgreSQL's DETAIL line quotes row values ("Failing row contains (7, G1, ...)"): record
# contents, which must not reach the logs even inside an error's text.
_PG_DETAIL = re.compile(r"^DETAIL:.*$", re.MULTILINE)
_REDACTED = "DETAIL: [redacted: may contain record contents]"


def redact(text: str) -> str:
    return _PG_DETAIL.sub(_REDACTED, text) if "DETAIL:" in text else text


#: The last second formatted, and its text: a worker logs many lines per second.
_last_second: tuple[int, str] = (-1, "")


def _timestamp(record: logging.LogRecord) -> str:
    global _last_second
    second = int(record.created)
    cached_second, text = _last_second     # one read: another thread may replace the pair
    if second != cached_second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _last_second = (second, text)
    return f"{text}.{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON object; extra= fields become top-level keys.

    ``pid`` tells gunicorn workers apart; a traceback goes into ``exception`` (logs only —
    clients get a safe message and the activity ID to quote).
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "activityID": getattr(record, "activityID", None) or current_activity_id(),
            "message": redact(record.getMessage()),
        }
        entry.update({name: value for name, value in vars(record).items()
                      if name not in _STANDARD and name not in entry})
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        return orjson.dumps(entry, default=str).decode()


class GunicornAccessFormatter(logging.Formatter):
    """gunicorn's access log as JSON, built from a fixed set of its atoms.

    gunicorn hands the atoms (request line, every request and response header, the WSGI
    environ) as the record's arguments. Only the harmless ones are picked, so an
    ``Authorization`` or ``x-api-key`` header can never reach the log whatever
    ``access_log_format`` says (that setting is ignored by this formatter).
    """

    def format(self, record: logging.LogRecord) -> str:
        atoms: Mapping[str, Any] = record.args if isinstance(record.args, Mapping) else {}

        def atom(name: str) -> Any:
            value = atoms.get(name)
            return None if value in (None, "-") else value

        status = atom("s")
        duration_us = atom("D")
        entry = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "activityID": atom("{x-activity-id}o"),
            "message": "access",
            "remote_addr": atom("h"),
            "method": atom("m"),
            "path": atom("U"),
            "protocol": atom("H"),
            "status": int(status) if str(status or "").isdigit() else status,
            "bytes": atom("B"),
            "duration_ms": round(duration_us / 1000, 2) if duration_us is not None else None,
            "user_agent": atom("a"),
        }
        return orjson.dumps(entry, default=str).decode()


def gunicorn_logconfig(level: str = "INFO") -> dict[str, Any]:
    """A ``logconfig_dict`` for gunicorn: error log on stderr, access log on stdout, all JSON.

    The root logger gets the same JSON handler on stderr, so a worker's application logs look
    the same before and after ``configure_logging`` runs in ``wsgi.py``.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": "flexsvc.ops.logs.JsonFormatter"},
            "access": {"()": "flexsvc.ops.logs.GunicornAccessFormatter"},
        },
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json",
                       "stream": "ext://sys.stderr"},
            "access": {"class": "logging.StreamHandler", "formatter": "access",
                       "stream": "ext://sys.stdout"},
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["stderr"], "propagate": False,
                               "qualname": "gunicorn.error"},
            "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False,
                                "qualname": "gunicorn.access"},
        },
    }


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(level: str | None = None) -> str:
    """``level``, else ``FLEXSVC_LOG_LEVEL``, else INFO; upper case, checked."""
    chosen = (level or os.environ.get("FLEXSVC_LOG_LEVEL") or "INFO").upper()
    if chosen not in LOG_LEVELS:
        raise ConfigError(f"FLEXSVC_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, "
                          f"got {chosen.lower()!r}")
    return chosen


def configure_logging(level: str | None = None) -> None:
    """Send all logs as JSON lines to standard error (where gunicorn's own logs go).

    The level comes from ``FLEXSVC_LOG_LEVEL`` (default INFO) unless given.
    """
    level = log_level(level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("psycopg.pool").setLevel("WARNING")
