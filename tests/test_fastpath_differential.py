"""The schema-derived fast path answers exactly what marshmallow answers, for any input.

``load_items`` (fast path first, marshmallow for what it does not accept) must give the same
entries as running every item through marshmallow alone (``marshmallow_entry``): same accepted
values, same 400 bodies. And whatever the fast path accepts on its own, marshmallow accepts with
the same loaded values.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from marshmallow import validates_schema

from flexsvc.rules import fastpath
from flexsvc.rules.fastpath import accept_item, compile_schema, load_items, marshmallow_entry
from flexsvc.rules.schemas import GroupFlexScheduleSchema, ScheduleInput
from tests.helpers import item

PATH_GROUP = "G1"
WIRE_NAMES = ["groupFlexSchedule_Key", "calendar_Year", "group_ID", "plan_ID", "schedule_Date",
              "schedule_Type"]
EXTRA_NAMES = ["entry_Date", "entry_User", "update_Date", "update_User", "unknown", "planid",
               "plan ID", ""]

tricky_chars = st.sampled_from(["\x00", "\ud800", "\udfff", "ß", "ﬁ", "ŉ", "İ", "ǰ", "a", "Z",
                                "1", " ", "é", "\u0130", "😀", '"', "\\", "-", ":", "T"])
texts = st.one_of(
    st.text(max_size=24),
    st.lists(tricky_chars, max_size=22).map("".join),
    st.sampled_from(["G1", "g1", "G2", "P1", "2026", "MONTHLY", "monthly", "x" * 16, "x" * 17,
                     "x" * 20, "x" * 21, "ß" * 8, "ß" * 9, "ﬁ" * 10, "", "2026 "]),
)
others = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True),
                   st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3),
                                                                       st.integers(), max_size=2))
keys = st.one_of(
    st.integers(min_value=-3, max_value=2**31 + 3),
    st.sampled_from([0, 1, 2**31 - 1, 2**31, -1, 2**63, -(2**63) - 1, 2**70]),
    st.floats(allow_nan=False), st.booleans(), texts, others,
)


def _date_text(draw: Any) -> str:
    dt = draw(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
    date = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}"
    sep = draw(st.sampled_from(["T", " ", "t", "_"]))
    time = draw(st.sampled_from(["", f"{dt.hour:02d}:{dt.minute:02d}",
                                 f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}",
                                 f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}.123456789",
                                 f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d},5"]))
    zone = draw(st.sampled_from(["", "Z", "z", " UTC", " GMT", "+05:00", "-0500", "+05", "-14:00",
                                 "+24:00", "+23:59", " -0500", "UTC", " utc"]))
    return date + (sep + time + zone if time else draw(st.sampled_from(["", zone])))


dates = st.one_of(
    st.composite(_date_text)(),
    st.sampled_from(["2026-02-30", "2026-13-01", "0000-01-01", "10000-01-01", "9999-12-31T23:00:00"
                     "-05:00", "0001-01-01T00:30:00+01:00", "2026-01-15T24:00:00", "2026-1-15",
                     "2026-01-15T00:00:00 -0500", "2026-01-15 00:00:00 UTC", "2026-01-15",
                     "2026-01-15T00:00:60", "x" * 65]),
    texts, others, st.integers(),
)
strings = st.one_of(texts, texts, others, st.integers())
VALUES = {"groupFlexSchedule_Key": keys, "calendar_Year": strings, "group_ID": st.one_of(
    st.just(PATH_GROUP), strings), "plan_ID": strings, "schedule_Date": dates,
    "schedule_Type": strings}


def _case(draw: Any, name: str) -> str:
    style = draw(st.sampled_from(["same", "same", "lower", "upper", "mixed"]))
    if style == "lower":
        return name.lower()
    if style == "upper":
        return name.upper()
    if style == "mixed":
        flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
        return "".join(c.swapcase() if f else c for c, f in zip(name, flips, strict=True))
    return name


@st.composite
def raw_items(draw: Any) -> Any:
    if draw(st.integers(0, 19)) == 0:
        return draw(st.one_of(others, texts, st.integers()))
    base = item()       # a valid item to start from, so many draws are valid or nearly so
    raw: dict[str, Any] = {}
    for name in WIRE_NAMES:
        choice = draw(st.integers(0, 9))
        if choice == 0:
            continue                                   # missing
        value = base[name] if choice <= 5 else draw(VALUES[name])
        raw[_case(draw, name)] = value
        if draw(st.integers(0, 14)) == 0:              # the same name again, other case
            raw[_case(draw, name)] = draw(VALUES[name])
    for name in draw(st.lists(st.sampled_from(EXTRA_NAMES), max_size=2)):
        raw[name] = draw(st.one_of(texts, others, dates))
    order = draw(st.permutations(list(raw)))
    return {name: raw[name] for name in order}


def assert_same(raws: list[Any]) -> None:
    expected = [marshmallow_entry(raw, PATH_GROUP) for raw in raws]
    assert load_items(raws, PATH_GROUP) == expected
    for raw, want in zip(raws, expected, strict=True):
        accepted = accept_item(raw, PATH_GROUP)
        if accepted is not None:
            assert isinstance(want, ScheduleInput)
            assert accepted == want
            assert [type(v) for v in accepted] == [type(v) for v in want]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_items())
@example(item())
@example(item(key=2**31 - 1, schedule_Type="ﬁ" * 8))        # upper() doubles the length
@example(item(schedule_Type="ß" * 8))
@example(item(plan_ID="P\x00"))
@example(item(plan_ID="\ud800"))
@example(item(key=True))
@example(item(key=1.0))
@example(item(group_ID="g1"))
@example({"GROUPFLEXSCHEDULE_KEY": 5, **{k: v for k, v in item().items() if k != WIRE_NAMES[0]}})
@example({**item(), "PLAN_id": "P9"})
@example([item()])
def test_fast_path_answers_like_marshmallow(raw: Any) -> None:
    assert_same([raw])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(raw_items(), max_size=12))
def test_batches_answer_like_marshmallow(raws: list[Any]) -> None:
    """Memoised names and dates (kept by the process, across batches) never leak a decision to
    another item."""
    assert_same(raws)


def test_the_fast_path_is_on_and_accepts_valid_items() -> None:
    assert fastpath._PLANS is not None
    for raw in (item(), item(7, schedule_Type="weekly", schedule_Date="2026-01-15 00:00:00 UTC"),
                {k.upper(): v for k, v in item().items()}, {**item(), "entry_User": "x" * 99}):
        assert accept_item(raw, PATH_GROUP) is not None
        assert_same([raw])


def test_the_fast_path_switches_itself_off_for_what_it_does_not_understand() -> None:
    class WithCheck(GroupFlexScheduleSchema):
        @validates_schema
        def _check(self, data: Any, **kwargs: Any) -> None:
            pass

    assert compile_schema(GroupFlexScheduleSchema()) is not None
    assert compile_schema(WithCheck()) is None
    assert compile_schema(GroupFlexScheduleSchema(unknown="raise")) is None


@pytest.mark.parametrize("raw", [None, [], "x", 1, {}, {"groupFlexSchedule_Key": 0}])
def test_non_items_go_to_marshmallow(raw: Any) -> None:
    assert accept_item(raw, PATH_GROUP) is None
    assert_same([raw])


def test_memos_are_kept_between_batches_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A value checked once is remembered for later batches (the dates of an integration repeat
    from call to call); a field's memo is emptied before a batch once it holds more than
    MEMO_VALUES_KEPT values, so it stays bounded whatever clients send."""
    monkeypatch.setattr(fastpath, "MEMO_VALUES_KEPT", 5)
    for memo in fastpath._MEMOS:
        memo.clear()
    date_memo = fastpath._MEMOS[ScheduleInput._fields.index("schedule_date")]

    def batch(first_day: int) -> list[dict[str, Any]]:
        return [item(i, schedule_Date=f"2026-03-{first_day + i:02d}T00:00:00") for i in range(4)]

    assert_same(batch(1))
    assert set(date_memo) == {f"2026-03-{d:02d}T00:00:00" for d in range(1, 5)}
    assert_same(batch(1))                    # the same values again: nothing new to keep
    assert len(date_memo) == 4
    assert_same(batch(11))                   # 8 kept now: over the bound
    assert len(date_memo) == 8
    assert_same(batch(21))                   # emptied first, then this batch's 4 kept
    assert set(date_memo) == {f"2026-03-{d:02d}T00:00:00" for d in range(21, 25)}
    assert_same([item(9, group_ID="OTHER", schedule_Date="2026-03-21T00:00:00")])   # still 400
