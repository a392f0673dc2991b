"""flexsvc: the VBA-style GroupFlexSchedule API over PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from types import FunctionType
from typing import Any

from flask import Flask

from flexsvc.config import Settings, load_settings
from flexsvc.data.db import Pools
from flexsvc.http import activity, errors, jsonio
from flexsvc.ops import metrics, requestlog


class FlexApp(Flask):
    """Flask, minus a per-call check the service does not need.

    Flask asks ``inspect`` whether each view and hook is a coroutine function on every call
    (nine times per batch request); every function here is a plain ``def`` registered once, so
    the answer is remembered per function (Flask documents ``ensure_sync`` as the override
    point). Coroutine functions still go through ``async_to_sync`` as in Flask.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._sync: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        try:
            return self._sync[func]
        except (KeyError, TypeError):     # not seen yet, or an unhashable callable
            chosen = super().ensure_sync(func)
        if isinstance(func, FunctionType):     # long-lived: views and hooks
            self._sync[func] = chosen
        return chosen


def create_app(settings: Settings | None = None) -> Flask:
    """Application factory: settings from ``FLEXSVC_CONFIG`` unless given."""
    app = FlexApp(__name__)
    settings = settings or load_settings()
    app.extensions["flexsvc.settings"] = settings
    app.extensions["flexsvc.pools"] = Pools(settings)
    # Werkzeug enforces the byte limit on every route, also for chunked bodies.
    app.config["MAX_CONTENT_LENGTH"] = settings.limits.max_body_bytes

    jsonio.init_app(app)
    activity.init_app(app)
    errors.init_app(app)
    requestlog.init_app(app)
    metrics.init_app(app)

    from flexsvc.http.blueprints import batch, docs, health, layout, schedules
    from flexsvc.ops import cli

    app.register_blueprint(health.bp)
    app.register_blueprint(batch.bp)
    app.register_blueprint(schedules.bp)
    app.register_blueprint(layout.bp)
    app.register_blueprint(docs.bp)
    cli.init_app(app)
    return app
