from tests.helpers import item, put_batch, rows, statuses


def test_create_then_update(client, db):
    response = put_batch(client, [item(0), item(7), item(7, schedule_Date="2026-02-01")])
    assert response.status_code == 207, response.get_json()
    assert statuses(response) == [201, 201, 200]
    stored = rows(db)
    assert [r["group_flex_schedule_key"] for r in stored] == [1, 7]
