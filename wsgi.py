"""WSGI entry point: ``gunicorn wsgi:app`` and ``flask --app wsgi ...``."""

from flexsvc import create_app
from flexsvc.ops.logs import configure_logging

configure_logging()
app = create_app()
