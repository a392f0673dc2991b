"""Ctrl-C stops a gunicorn worker at once, instead of sometimes after a minute.

gunicorn's threaded worker answers SIGINT and SIGQUIT (its "quit now" signals) by shutting its
thread pool down from inside the signal handler. The handler runs in the worker's main thread
between two bytecodes of whatever it was doing; when that was the thread pool's own ``submit``
(a request was being handed to a thread), or an earlier quit handler (Ctrl-C in a terminal sends
SIGINT to the worker, and the master sends SIGQUIT on top), the pool's lock is already held by
that same thread and the handler waits for it forever. The master then kills the worker only
after ``graceful_timeout`` (60 s): ``make run`` took a minute to stop (seen on this project, and
reproduced by tests/test_worker_signals.py).

Here both signals only mark the worker as stopping, which takes no lock; the worker's loop sees
it within a second and stops as on SIGTERM: it accepts no new connection, lets the requests in
flight finish (at most ``graceful_timeout``; each is one transaction, all or nothing), then
exits. gunicorn's ``worker_int`` hook is not called (flexsvc defines none).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

Handler = Callable[[int, FrameType | None], None]


def stop_soon(worker: Any) -> Handler:
    """A signal handler that only clears ``worker.alive`` (safe whatever the thread holds)."""

    def handle_quit(sig: int, frame: FrameType | None) -> None:
        worker.alive = False

    return handle_quit


def install_stop_soon(worker: Any) -> None:
    """gunicorn's ``post_worker_init`` hook: SIGINT and SIGQUIT stop the worker as above.
    Runs after gunicorn installed its own handlers, so these replace them."""
    handler = stop_soon(worker)
    signal.signal(signal.SIGQUIT, handler)
    signal.signal(signal.SIGINT, handler)
