"""gunicorn settings for flexsvc (``gunicorn -c gunicorn.conf.py wsgi:app``).

Environment: FLEXSVC_BIND, FLEXSVC_WORKERS, FLEXSVC_THREADS, FLEXSVC_MAX_REQUESTS,
FLEXSVC_LOG_LEVEL, PROMETHEUS_MULTIPROC_DIR (see docs/CONFIGURATION.md). Command-line options
and GUNICORN_CMD_ARGS still win over everything here.

gunicorn's master runs this file before it starts anything, so this is where the service's
configuration (FLEXSVC_CONFIG) and these variables are checked: a mistake stops gunicorn at once
with one line on stderr, instead of workers that fail to boot (SPEC §10).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import NoReturn

# Prometheus multiprocess mode: every worker writes its samples under this folder, and any
# worker answering /metrics merges them. Workers inherit the variable from the master. It must
# be set BEFORE anything imports prometheus_client (flexsvc.ops.logs below imports the package),
# because prometheus_client chooses between in-process and multiprocess values at import time.
_created_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _created_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="flexsvc-metrics-")
_metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])

# After the metrics folder, see above.
from flexsvc.config import ConfigError, load_settings  # noqa: E402
from flexsvc.ops.logs import gunicorn_logconfig, log_level  # noqa: E402
from flexsvc.ops.operator_errors import exit_with  # noqa: E402


def _stop(message: str) -> NoReturn:
    """Leave with ``message`` as the one line on stderr, before any worker is started."""
    if _created_metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
    exit_with(message)


def _env_int(name: str, default: int, minimum: int) -> int:
    text = os.environ.get(name, str(default)).strip()
    if not text.isdigit() or int(text) < minimum:
        _stop(f"{name} must be an integer >= {minimum}, got {text!r}")
    return int(text)


try:
    load_settings()
    loglevel = log_level().lower()
except ConfigError as exc:
    _stop(str(exc))

bind = os.environ.get("FLEXSVC_BIND", "127.0.0.1:8000")

# Threads let one worker overlap database waits; two processes use both cores of a small box.
# Workers are stateless (pools and metrics files are per process), so scale with the cores.
workers = _env_int("FLEXSVC_WORKERS", 2, minimum=1)
worker_class = "gthread"
threads = _env_int("FLEXSVC_THREADS", 4, minimum=1)
# Pools must be opened after the fork, and the metrics folder must be set before the app
# imports prometheus_client: never preload the app into the master.
preload_app = False
if os.path.isdir("/dev/shm"):  # noqa: S108 - gunicorn makes private files in it
    worker_tmp_dir = "/dev/shm"  # noqa: S108 - the heartbeat must not wait on a slow disk

# A 10,000-item batch (about 2 MB of JSON) takes a second or two; 120 s leaves room for a
# loaded machine and a slow client upload. On shutdown or a recycle, in-flight batches get
# graceful_timeout seconds to finish (they are one transaction each: all or nothing).
timeout = 120
graceful_timeout = 60
# Keep-alive to the load balancer; set the balancer's idle timeout below this value.
keepalive = 75
# Recycle workers now and then (bounds any slow leak); jitter keeps them from restarting at once.
max_requests = _env_int("FLEXSVC_MAX_REQUESTS", 5000, minimum=0)
max_requests_jitter = max_requests // 10

# gunicorn's control socket (gunicornc) defaults to one path per user, which several instances
# on one host would fight over: off unless FLEXSVC_CONTROL_SOCKET names a path for this one.
control_socket = os.environ.get("FLEXSVC_CONTROL_SOCKET") or None
control_socket_disable = control_socket is None

# Logs: JSON lines like the application's; errors on stderr, access log on stdout.
errorlog = "-"
accesslog = "-"
logconfig_dict = gunicorn_logconfig(loglevel.upper())



def on_starting(server) -> None:
    """Start from empty metrics: files of a previous run would be counted again."""
    _metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in _metrics_dir.glob("*.db"):
        stale.unlink()


def post_worker_init(worker) -> None:
    """SIGINT/SIGQUIT (Ctrl-C) must not deadlock gunicorn's threaded worker in its own signal
    handler: they stop it as SIGTERM does (flexsvc/ops/worker_signals.py)."""
    from flexsvc.ops.worker_signals import install_stop_soon

    install_stop_soon(worker)


def child_exit(server, worker) -> None:
    """A worker left (recycled, crashed, stopped): drop its live gauges from the totals."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, str(_metrics_dir))


def on_exit(server) -> None:
    if _created_metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
