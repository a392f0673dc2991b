"""Concurrency (SPEC §7): many clients upserting overlapping keys in different orders at once.

No deadlock, no 500, each key created exactly once across all responses, and the final rows and
all the statuses are explained by ONE serial order of the batches (so no update was lost and
"last committed write wins"). Run against the real pool in-process, and through a real
multi-worker gunicorn.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta

import psycopg
import pytest
import requests

from tests.conftest import settings_mapping
from tests.helpers import headers
from tests.helpers import item as any_item
from tests.servers import run_gunicorn, write_config

pytestmark = pytest.mark.slow

URL = "/groups/G1/flex-schedules-batch"
EPOCH = datetime(2026, 1, 1)
#: A request (items) -> (HTTP status, parsed body); one per thread.
Sender = Callable[[list[dict]], tuple[int, dict]]


def item(key: int, **fields) -> dict:
    """An item whose date is stored as sent (CUSTOM: a rule-based type would calculate it, and
    the dates here say which client and batch wrote a row)."""
    return any_item(key, schedule_Type="CUSTOM", **fields)


def token_date(client: int, batch: int, position: int) -> str:
    """A schedule_Date that says which client, batch and item wrote a row."""
    return (EPOCH + timedelta(minutes=client * 100_000 + batch * 1000 + position)).isoformat()


def decode_date(value: datetime) -> tuple[int, int]:
    minutes = int((value - EPOCH).total_seconds() // 60)
    return minutes // 100_000, (minutes % 100_000) // 1000


def run_clients(make_sender: Callable[[], Sender], clients: int, batches: int,
                build: Callable[[int, int], list[dict]], budget: float = 120.0):
    """``clients`` threads each send ``batches`` batches; returns {(client, batch): (items,
    status, body)}. Bounded: every thread must finish within ``budget`` seconds."""
    outcomes: dict[tuple[int, int], tuple[list[dict], int, dict]] = {}
    failures: list[BaseException] = []
    start = threading.Barrier(clients)

    def worker(client: int) -> None:
        try:
            send = make_sender()
            start.wait(timeout=30)
            for batch in range(batches):
                items = build(client, batch)
                status, body = send(items)
                outcomes[(client, batch)] = (items, status, body)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in range(clients)]
    deadline = time.monotonic() + budget
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a client hung (deadlock?)"
    assert not failures, failures
    return outcomes


def overlapping_batches(keys: int, per_batch: int, key0: int, seed: int):
    """Each batch: ``per_batch`` explicit keys drawn from 1..keys (repeats allowed, random
    order), plus ``key0`` key-0 creates at random positions; dates identify the writer."""
    def build(client: int, batch: int) -> list[dict]:
        rng = random.Random(seed * 1_000_003 + client * 1009 + batch)
        chosen = [rng.randint(1, keys) for _ in range(per_batch)] + [0] * key0
        rng.shuffle(chosen)
        return [item(k, plan_ID=rng.choice(["P1", "P2"]),
                     schedule_Date=token_date(client, batch, i))
                for i, k in enumerate(chosen)]
    return build


def check_serializable(outcomes, stored: dict[int, tuple[str, datetime]]) -> dict[str, int]:
    """Assert every response and the final rows are those of one serial order of batches."""
    creators: dict[int, list] = defaultdict(list)   # key -> batches that answered 201 for it
    touched: dict[int, set] = defaultdict(set)      # key -> batches that wrote it
    final_value: dict[tuple, dict[int, tuple]] = {}  # batch -> key -> (plan, date) it left
    key0_assigned: list[int] = []
    for name, (items, status, body) in outcomes.items():
        assert status == 207, (name, status, body)
        results = body["data"]
        assert len(results) == len(items)
        seen_in_batch: set[int] = set()
        final_value[name] = {}
        for sent, result in zip(items, results, strict=True):
            assert result["status"] in (200, 201), (name, result)
            key = result["id"][0]["value"]
            if sent["groupFlexSchedule_Key"] == 0:
                assert result["status"] == 201 and key > 0
                key0_assigned.append(key)
            else:
                assert key == sent["groupFlexSchedule_Key"]
                # Within a batch: a later occurrence of a key is always an update.
                if key in seen_in_batch:
                    assert result["status"] == 200, (name, result)
            if result["status"] == 201:
                creators[key].append(name)
            seen_in_batch.add(key)
            touched[key].add(name)
            final_value[name][key] = (sent["plan_ID"], datetime.fromisoformat(
                sent["schedule_Date"]))
    # Exactly one 201 per key across all responses; key-0 keys unique, never an explicit key.
    for key in touched:
        assert len(creators[key]) == 1, (key, creators[key])
    assert len(key0_assigned) == len(set(key0_assigned))
    assert set(stored) == set(touched), "rows differ from the keys the responses report"
    # Precedence edges: creator before every other writer of the key; every writer before the
    # batch whose value the row holds. A serial order exists iff the graph has no cycle.
    edges: dict[tuple, set] = defaultdict(set)
    for key, writers in touched.items():
        plan, date = stored[key]
        last = decode_date(date)
        assert last in writers, (key, last)
        assert final_value[last][key] == (plan, date), (key, "row is not the last write")
        (creator,) = creators[key]
        for other in writers - {creator}:
            edges[creator].add(other)
        for other in writers - {last}:
            edges[other].add(last)
    assert_acyclic(set(outcomes), edges)
    return {"batches": len(outcomes), "keys": len(touched), "key0": len(key0_assigned)}


def assert_acyclic(nodes: set, edges: dict[tuple, set]) -> None:
    incoming = {n: 0 for n in nodes}
    for targets in edges.values():
        for t in targets:
            incoming[t] += 1
    ready = [n for n, count in incoming.items() if count == 0]
    ordered = 0
    while ready:
        node = ready.pop()
        ordered += 1
        for t in edges.get(node, ()):
            incoming[t] -= 1
            if incoming[t] == 0:
                ready.append(t)
    assert ordered == len(nodes), "no serial order explains the outcome (lost update?)"


def stored_rows(conn: psycopg.Connection) -> dict[int, tuple[str, datetime]]:
    return {k: (plan, date) for k, plan, date in conn.execute(
        "SELECT group_flex_schedule_key, plan_id, schedule_date FROM group_flex_schedule")}


def flask_sender(app) -> Callable[[], Sender]:
    def make() -> Sender:
        client = app.test_client()

        def send(items):
            response = client.put(URL, json=items, headers=headers())
            return response.status_code, response.get_json()
        return send
    return make


def test_overlapping_batches_through_the_pool(pool_app, db):
    """8 clients x 6 batches of 150 items over 300 keys, random order, plus key-0 creates."""
    outcomes = run_clients(flask_sender(pool_app), clients=8, batches=6,
                           build=overlapping_batches(keys=300, per_batch=150, key0=10, seed=1))
    counts = check_serializable(outcomes, stored_rows(db))
    assert counts["batches"] == 48 and counts["key0"] == 480


def test_key0_creates_never_collide_with_explicit_keys(pool_app, db):
    """Half the clients create with key 0 while the other half create explicit keys just above
    the sequence's current value, where the key-0 creates are heading. A key is created once:
    by an explicit create (a key-0 create then never returns it) or by a key-0 create (an
    explicit item for it that commits later is an update, 200)."""
    first = pool_app.test_client().put(URL, json=[item(0) for _ in range(5)], headers=headers())
    top = max(r["id"][0]["value"] for r in first.get_json()["data"])

    dsn = db.info.dsn

    def build(client: int, batch: int) -> list[dict]:
        if client % 2:
            return [item(0, schedule_Date=token_date(client, batch, i)) for i in range(40)]
        with psycopg.connect(dsn, autocommit=True) as conn:   # where key-0 creates go next
            (current,) = conn.execute(
                "SELECT pg_sequence_last_value(pg_get_serial_sequence("
                "'group_flex_schedule', 'group_flex_schedule_key'))").fetchone()
        base = (current or 0) + 1 + (client // 2) * 5   # overlapping runs of explicit keys
        # Half the keys race the key-0 creates head-on; the other half sit 1,000 ahead, so some
        # explicit creates surely win and key-0 allocation must then jump past them.
        keys = [base + i for i in range(20)] + [base + 1000 + i for i in range(20)]
        return [item(k, schedule_Date=token_date(client, batch, i)) for i, k in enumerate(keys)]

    outcomes = run_clients(flask_sender(pool_app), clients=8, batches=5, build=build)
    stored = stored_rows(db)
    for key in range(1, top + 1):
        stored.pop(key)
    counts = check_serializable(outcomes, stored)
    assert counts["key0"] == 4 * 5 * 40
    explicit_created = {r["id"][0]["value"] for (client, _), (_, _, body) in outcomes.items()
                        if client % 2 == 0 for r in body["data"] if r["status"] == 201}
    assert explicit_created, "no explicit create won the race: the test proved nothing"


def test_overlapping_batches_through_gunicorn(tenant_dsns, db, tmp_path):
    """The same workload through 2 gunicorn workers x 4 threads (two pools, two processes)."""
    config = write_config(tmp_path / "flexsvc.toml", settings_mapping(
        tenant_dsns, pool={"min_size": 0, "max_size": 4, "wait_timeout": 20.0}))
    with run_gunicorn(config, workers=2, threads=4) as server:
        def make() -> Sender:
            session = requests.Session()

            def send(items):
                response = session.put(server.url + URL, json=items, headers=headers(),
                                       timeout=60)
                return response.status_code, response.json()
            return send

        outcomes = run_clients(make, clients=8, batches=5,
                               build=overlapping_batches(keys=250, per_batch=120, key0=8,
                                                         seed=2))
        errors = [e for e in server.log_lines() if e.get("level") in ("error", "critical")]
        assert not errors, errors[:3]
    counts = check_serializable(outcomes, stored_rows(db))
    assert counts["batches"] == 40
