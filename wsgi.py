"""WSGI entry point: ``gunicorn wsgi:app`` and ``flask --app wsgi ...``.

A configuration mistake stops the process with one line on stderr (SPEC §10), also when Flask's
command line imports this module. Under ``flask --app wsgi ...`` (a click command is running) an
operator reads the output, so only warnings and errors are logged unless FLEXSVC_LOG_LEVEL says
otherwise.
"""

import os

import click

from flexsvc import create_app
from flexsvc.config import ConfigError
from flexsvc.ops.logs import configure_logging
from flexsvc.ops.operator_errors import exit_with

# gunicorn's master checks the configuration first (gunicorn.conf.py). A worker only gets here
# with a bad one if the file changed since, or gunicorn runs without our gunicorn.conf.py: exit
# status 3, gunicorn's "worker failed to boot", makes its master stop instead of respawning.
GUNICORN_WORKER_BOOT_ERROR = 3

under_cli = click.get_current_context(silent=True) is not None
try:
    configure_logging((os.environ.get("FLEXSVC_LOG_LEVEL") or "WARNING") if under_cli else None)
    app = create_app()
except ConfigError as exc:
    exit_with(str(exc), status=1 if under_cli else GUNICORN_WORKER_BOOT_ERROR)
