"""Ctrl-C stops gunicorn promptly: SIGINT/SIGQUIT only mark a worker as stopping, never shut
its thread pool down from inside the handler (flexsvc/ops/worker_signals.py, installed by
gunicorn.conf.py's post_worker_init)."""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time

import psutil

from flexsvc.ops.worker_signals import stop_soon
from tests.conftest import settings_mapping
from tests.servers import run_gunicorn, write_config


def test_a_quit_signal_only_marks_the_worker_as_stopping():
    class Worker:
        alive = True

    worker = Worker()
    handler = stop_soon(worker)
    handler(signal.SIGINT, None)
    handler(signal.SIGQUIT, None)      # again, as the master's SIGQUIT after the terminal's
    assert worker.alive is False


def test_ctrl_c_under_load_stops_gunicorn_promptly(tenant_dsns, tmp_path):
    """As a terminal's Ctrl-C while requests arrive: SIGINT to the master and to each worker at
    once, and more SIGQUITs on top. Without the fix a worker deadlocked in about one run in
    three (the signal landed while its main thread handed a request to a thread) and was killed
    only after graceful_timeout (60 s)."""
    config = write_config(tmp_path / "flexsvc.toml", settings_mapping(tenant_dsns))
    with run_gunicorn(config, workers=2, threads=4) as server:
        master = psutil.Process(server.process.pid)
        workers = master.children()
        assert len(workers) == 2
        stop = threading.Event()

        def keep_asking() -> None:
            while not stop.is_set():
                try:
                    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
                    connection.request("GET", "/healthz")
                    connection.getresponse().read()
                    connection.close()
                except OSError:
                    pass

        clients = [threading.Thread(target=keep_asking, daemon=True) for _ in range(6)]
        for client in clients:
            client.start()
        try:
            time.sleep(1.0)
            started = time.monotonic()
            os.killpg(os.getpgid(master.pid), signal.SIGINT)
            for _ in range(20):
                for worker in workers:
                    try:
                        worker.send_signal(signal.SIGQUIT)
                    except psutil.NoSuchProcess:
                        pass
            server.process.wait(timeout=30)
            assert time.monotonic() - started < 15
        finally:
            stop.set()
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
