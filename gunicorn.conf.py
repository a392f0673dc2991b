"""gunicorn settings for flexsvc. Every value can be overridden with GUNICORN_CMD_ARGS."""

import os

bind = os.environ.get("FLEXSVC_BIND", "127.0.0.1:8000")
# Threads let one worker overlap database waits; two processes use both cores of a small box.
workers = int(os.environ.get("FLEXSVC_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("FLEXSVC_THREADS", "4"))
# A 10,000-item batch takes well under a few seconds; leave ample room on a loaded machine.
timeout = 120
graceful_timeout = 60
keepalive = 5
max_requests = 2000
max_requests_jitter = 200
accesslog = None
errorlog = "-"
loglevel = "info"
