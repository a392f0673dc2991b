"""Planning a batch: every item's outcome, decided in request order from facts (pure, no I/O).

The data layer (``flexsvc.data.batch``) reads the facts under locks, asks ``plan_batch`` what
each item does, and writes the final row of every key in one statement. Items of a rule-based
type get their calculated date here (``flexsvc.rules.calculation``, SPEC §8).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flexsvc.rules.calculation import GroupFlexDates, ScheduleCalculator, group_flex_label
from flexsvc.rules.schemas import KEY_FIELD, ScheduleInput

KEYS_EXHAUSTED = (f"No new {KEY_FIELD} can be assigned: the key sequence has reached its "
                  "maximum (2147483647). Send an explicit key.")


@dataclass(frozen=True)
class BatchFacts:
    """What the database says about a batch, read under locks in one round trip."""

    group_exists: bool
    owners: dict[int, str]               # existing key -> its group_id (rows locked FOR UPDATE)
    #: (plan_id, calendar_year) of each of the group's GroupFlex rows -> its dates
    parents: Mapping[tuple[str, str], GroupFlexDates]
    #: every schedule type -> its recurrence rule (None: dates entered by hand, as CUSTOM)
    schedule_types: Mapping[str, str | None]


@dataclass(slots=True)
class ItemResult:
    """The outcome of one item, rendered as ``{"id": [...], "status": ..., "body": ...}``."""

    status: int
    key: Any
    body: str

    def to_json(self) -> dict[str, Any]:
        return {"id": [{"key": KEY_FIELD, "value": self.key}], "status": self.status,
                "body": self.body}


#: An item is either validated input or an outcome decided before the database (a 400).
BatchEntry = ScheduleInput | ItemResult


@dataclass
class BatchPlan:
    results: list[ItemResult]
    rows: dict[int, ScheduleInput] = field(default_factory=dict)  # final row per key
    created: set[int] = field(default_factory=set)                # keys this batch creates
    item_keys: list[int | None] = field(default_factory=list)     # key each item wrote

    @property
    def failed(self) -> bool:
        return any(r.status >= 400 for r in self.results)


def plan_batch(
    entries: Sequence[BatchEntry], group_id: str, facts: BatchFacts,
    new_keys: Iterator[int] | None,
) -> BatchPlan:
    """Decide every item's outcome in request order (pure: no I/O).

    ``new_keys`` supplies server-assigned keys for key-0 creates; None (dry run) reports 0.
    """
    owners = dict(facts.owners)
    plan = BatchPlan(results=[])
    # Locals: this loop runs once per item (10,000 per big batch).
    results, item_keys, rows, created_keys = plan.results, plan.item_keys, plan.rows, plan.created
    parents, schedule_types = facts.parents, facts.schedule_types
    calculate = ScheduleCalculator(group_id, schedule_types, parents).outcome
    outcomes: dict[tuple, tuple[datetime | None, str]] = {}   # batches repeat their dates
    new_item = tuple.__new__
    for entry in entries:
        if isinstance(entry, ItemResult):
            results.append(entry)
            item_keys.append(None)
            continue
        key = entry.key
        owner = owners.get(key) if key else None
        if owner is not None and owner != group_id:
            outcome = ItemResult(409, key, f"{KEY_FIELD} {key} exists under another group; "
                                           "that record was not changed.")
        elif (entry.plan_id, entry.calendar_year) not in parents:
            outcome = ItemResult(422, key, "The parent " + group_flex_label(
                group_id, entry.plan_id, entry.calendar_year) + " does not exist.")
        elif entry.schedule_type not in schedule_types:
            outcome = ItemResult(422, key, f"schedule_Type {entry.schedule_type} does not exist "
                                           "in flex_schedule_type.")
        else:
            calculated = ""
            if schedule_types[entry.schedule_type] is not None:     # a rule: SPEC §8
                _, item_group, plan_id, year, sent, schedule_type = entry
                memo_key = (plan_id, year, schedule_type, sent)
                found = outcomes.get(memo_key)
                if found is None:
                    found = outcomes[memo_key] = calculate(plan_id, year, schedule_type, sent)
                stored, calculated = found
                if stored is None:
                    results.append(ItemResult(422, key, calculated))
                    item_keys.append(None)
                    continue
                if calculated:   # the stored date differs from the one sent
                    entry = new_item(ScheduleInput, (key, item_group, plan_id, year, stored,
                                                     schedule_type))
            if key == 0:
                key = next(new_keys, None) if new_keys is not None else 0
                if key is None:   # the key sequence is used up (SPEC: never a 500)
                    results.append(ItemResult(409, 0, KEYS_EXHAUSTED))
                    item_keys.append(None)
                    continue
                entry = entry._replace(key=key)
                created = True
            else:
                created = owner is None
            if created:
                owners[key] = group_id
                created_keys.add(key)
                results.append(ItemResult(201, key, "Created" + calculated))
            else:
                results.append(ItemResult(200, key, "Updated" + calculated))
            rows[key] = entry
            item_keys.append(key)
            continue
        results.append(outcome)
        item_keys.append(None)
    return plan


def not_applied(results: Sequence[ItemResult], entries: Sequence[BatchEntry]) -> list[ItemResult]:
    """Atomic mode with a failure: every item that would have succeeded answers 424."""
    return [
        ItemResult(424, entry.key, "Not applied: another item of this atomic batch failed, "
                                   "so nothing was written.")
        if result.status < 400 else result
        for result, entry in zip(results, entries, strict=True)
    ]
