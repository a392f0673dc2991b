"""A big batch (the fast path, the paused collector) answers exactly like small ones."""

from __future__ import annotations

import gc

from tests.helpers import item, put_batch, rows, statuses

PATTERN = [201, 400, 409, 200, 422, 201, 400, 200, 422]


def _pattern(base: int) -> list:
    return [
        item(base), {"nonsense": True}, item(50), item(51), item(base + 3, plan_ID="P9"),
        item(0), item(base, schedule_Date="2026-02-30"), item(base, plan_ID="P2"),
        item(base + 4, schedule_Type="nope"),
    ]


def test_mixed_outcomes_in_a_big_batch_match_the_small_batch_answers(client, db):
    db.execute("INSERT INTO group_flex_schedule (group_flex_schedule_key, group_id, plan_id, "
               "calendar_year, schedule_date, schedule_type, entry_date, update_date) VALUES "
               "(50, 'G2', 'P1', '2026', '2026-01-01', 'CUSTOM', now(), now()), "
               "(51, 'G1', 'P1', '2026', '2026-01-01', 'CUSTOM', now(), now())")
    repeats = 120                                   # 1,080 items: over the GC pause threshold
    small = put_batch(client, _pattern(100))
    assert statuses(small) == PATTERN
    body = [entry for r in range(repeats) for entry in _pattern(1000 + 10 * r)]
    response = put_batch(client, body)
    assert statuses(response) == PATTERN * repeats
    assert gc.isenabled()
    data = response.get_json()["data"]
    small_bodies = [d["body"] for d in small.get_json()["data"]]
    for r in range(repeats):                        # the failures' bodies hold no varying key
        chunk = data[r * len(PATTERN):(r + 1) * len(PATTERN)]
        assert [chunk[i]["body"] for i in (1, 2, 4, 6, 8)] == [small_bodies[i]
                                                                for i in (1, 2, 4, 6, 8)]
    assert len({d["id"][0]["value"] for d in data if d["status"] == 201}) == 2 * repeats
    stored = rows(db, "group_id = 'G1'")
    explicit = [r for r in stored if 1000 <= r["group_flex_schedule_key"] < 1000 + 10 * repeats]
    assert len(explicit) == repeats and {r["plan_id"] for r in explicit} == {"P2"}
    assert len(stored) == 1 + 2 + 2 * repeats      # key 51, the small batch's two, the big one's
