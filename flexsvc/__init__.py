"""flexsvc: the VBA-style GroupFlexSchedule API over PostgreSQL."""

from __future__ import annotations

from flask import Flask

from flexsvc.config import Settings, load_settings
from flexsvc.data.db import Pools
from flexsvc.http import activity, errors, jsonio
from flexsvc.ops import metrics, requestlog


def create_app(settings: Settings | None = None) -> Flask:
    """Application factory: settings from ``FLEXSVC_CONFIG`` unless given."""
    app = Flask(__name__)
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
