"""GET /metrics: what a Prometheus scrape shows, in-process and under a multi-worker gunicorn."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from flexsvc import create_app
from flexsvc.config import ConfigError, settings_from_mapping
from flexsvc.ops.metrics import database_labels
from tests.conftest import settings_mapping
from tests.helpers import API_KEYS, JWT_SECRET, headers, item, put_batch, token
from tests.servers import run_gunicorn, write_config

BATCH_ROUTE = "/groups/<path:group_id>/flex-schedules-batch"


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of one scrape."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scrape: dict, name: str, **labels: str) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


def test_metrics_in_process_counts_requests_and_items(client):
    before = samples(client.get("/metrics").get_data(as_text=True))
    put_batch(client, [item(0), item(0, plan_ID="NOPE"), {"groupFlexSchedule_Key": "x"}])
    client.get("/no/such/route")
    client.open("/no/such/route", method="BREW")   # a client's made-up method
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    after = samples(response.get_data(as_text=True))

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("flexsvc_http_requests_total", method="PUT", route=BATCH_ROUTE,
                status="207") == 1
    assert grew("flexsvc_http_request_duration_seconds_count", method="PUT", route=BATCH_ROUTE,
                status="207") == 1
    # A 404 is labelled by a fixed placeholder, never the raw path (unbounded label values).
    assert grew("flexsvc_http_requests_total", method="GET", route="<unmatched>",
                status="404") == 1
    assert grew("flexsvc_http_requests_total", method="OTHER", route="<unmatched>",
                status="404") == 1
    assert not [k for k in after if ("method", "BREW") in k[1]]
    assert grew("flexsvc_batch_items_count", database="db1") == 1
    assert grew("flexsvc_batch_items_sum", database="db1") == 3
    for status in ("201", "422", "400"):
        assert grew("flexsvc_batch_item_results_total", database="db1", status=status) == 1
    assert value(after, "flexsvc_db_pool_connections_max", database="db1") > 0


def test_database_labels_hide_names_unless_configured():
    assert database_labels(["zeta", "acme"], "index") == {"acme": "db1", "zeta": "db2"}
    assert database_labels(["zeta", "acme"], "name") == {"acme": "acme", "zeta": "zeta"}
    with pytest.raises(ConfigError, match="database_labels"):
        settings_from_mapping(settings_mapping({"main": "postgresql://x/y", "other": "postgresql://x/z"},
                                               metrics={"database_labels": "dsn"}), environ={})


def test_metrics_can_label_by_name(tenant_dsns, clean_db):
    app = create_app(settings_from_mapping(
        settings_mapping(tenant_dsns, metrics={"database_labels": "name"}), environ={}))
    try:
        client = app.test_client()
        assert put_batch(client, [item(0)]).status_code == 207
        scrape = samples(client.get("/metrics").get_data(as_text=True))
        assert value(scrape, "flexsvc_batch_item_results_total", database="main",
                     status="201") >= 1
    finally:
        app.extensions["flexsvc.pools"].close()


@pytest.mark.slow
def test_every_scrape_shows_all_workers_totals(tmp_path: Path, tenant_dsns, clean_db):
    """Two workers recycled every 4 requests: totals survive exits, live gauges do not."""
    config = write_config(tmp_path / "flexsvc.toml", settings_mapping(tenant_dsns))
    batches = [[item(0)] * (i % 3 + 1) + [item(0, plan_ID="NOPE")] * (i % 2) for i in range(12)]
    expected_items = Counter()
    for batch in batches:
        expected_items["201"] += sum(1 for it in batch if it["plan_ID"] == "P1")
        expected_items["422"] += sum(1 for it in batch if it["plan_ID"] == "NOPE")

    with run_gunicorn(config, workers=2, threads=2,
                      env={"FLEXSVC_MAX_REQUESTS": "4"}) as server:
        url = server.url + "/groups/G1/flex-schedules-batch"
        for batch in batches:
            response = requests.put(url, json=batch, headers=headers(), timeout=30)
            assert response.status_code == 207
        assert requests.get(server.url + "/nowhere", timeout=10).status_code == 404
        assert requests.put(url, json=[], headers=headers(key=None), timeout=10
                            ).status_code == 401
        texts = [requests.get(server.url + "/metrics", timeout=10).text for _ in range(6)]
        lines = server.request_lines()

    batch_pids = {e["pid"] for e in lines if e["route"] == BATCH_ROUTE}
    scrape_pids = {e["pid"] for e in lines if e["route"] == "/metrics"}
    assert len(batch_pids) >= 3, "workers were recycled, so several processes served batches"
    assert len(scrape_pids) >= 2, "scrapes were answered by different processes"

    scrapes = [samples(text) for text in texts]
    for scrape in scrapes:
        assert value(scrape, "flexsvc_http_requests_total", method="PUT", route=BATCH_ROUTE,
                     status="207") == 12
        assert value(scrape, "flexsvc_http_requests_total", method="PUT", route=BATCH_ROUTE,
                     status="401") == 1
        assert value(scrape, "flexsvc_http_requests_total", method="GET", route="<unmatched>",
                     status="404") == 1
        assert value(scrape, "flexsvc_http_request_duration_seconds_count", method="PUT",
                     route=BATCH_ROUTE, status="207") == 12
        assert value(scrape, "flexsvc_batch_items_count", database="db1") == 12
        assert value(scrape, "flexsvc_batch_items_sum", database="db1") == sum(
            map(len, batches))
        for status, count in expected_items.items():
            assert value(scrape, "flexsvc_batch_item_results_total", database="db1",
                         status=status) == count
        # livesum: only live workers (at most 2) count; exited ones were marked dead.
        assert value(scrape, "flexsvc_db_pool_connections_max", database="db1") <= 8
        assert value(scrape, "flexsvc_db_pool_requests_waiting", database="db1") == 0

    # The unauthenticated scrape reveals no tenant name, DSN or credential.
    for text in texts:
        for secret in [*tenant_dsns.values(), JWT_SECRET, *(k for k, _ in API_KEYS.values()),
                       token(), "postgresql://", "dbname="]:
            assert secret not in text
        assert 'database="main"' not in text and 'database="other"' not in text
