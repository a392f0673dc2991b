"""A fast accept-path for batch items, derived from GroupFlexScheduleSchema at import.

marshmallow stays the contract: it defines the field names, the rules and every message. Loading
10,000 items through it costs more than the database's whole upsert, though, so the batch
endpoint first tries this path, which is compiled from the schema's own field objects:

* the wire names and their case-insensitive matching come from the schema's ``data_key``s (the
  same table its ``pre_load`` hook uses);
* each field's kind comes from its class (StrictInteger, StorableString, UpperString,
  FlexDateTime), its bounds from its own ``Length``/``Range`` validators, any other validator is
  called as it is, and a field of any other class is deserialized by the field object itself;
* date-times are parsed by the same ``parse_datetime`` the schema's field calls.

It only ever ACCEPTS: an item it cannot accept with certainty (wrong type, out of bounds, a
missing field, anything unusual) goes through marshmallow, which produces the result and the
messages. So an accepted item is exactly what marshmallow would load, and a rejected one gets
marshmallow's own answer. If the schema gains something this path does not understand (a hook,
a field of a different shape), the path switches itself off and every item goes through
marshmallow. tests/test_fastpath_differential.py checks, with hypothesis, that results are
identical to marshmallow's for arbitrary input.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from marshmallow import EXCLUDE, ValidationError, validate
from marshmallow.fields import Field

from flexsvc.rules.datetimes import parse_datetime
from flexsvc.rules.planning import BatchEntry, ItemResult
from flexsvc.rules.schemas import (
    _CANONICAL_NAMES,
    ITEM_SCHEMA,
    FlexDateTime,
    GroupFlexScheduleSchema,
    ScheduleInput,
    StorableString,
    StrictInteger,
    UpperString,
    describe_errors,
    echo_key,
    load_item,
)
from flexsvc.rules.text import is_utf8_encodable

#: The hooks the path knows how to mirror (the case-insensitive name matching).
_KNOWN_HOOKS = {"pre_load": ["_match_names_case_insensitively"]}
_INT, _STR, _UPPER, _DATETIME, _GENERIC = range(5)
_KINDS = {StrictInteger: _INT, StorableString: _STR, UpperString: _UPPER,
          FlexDateTime: _DATETIME}


class FieldPlan:
    """What the fast path checks for one schema field, read off the field object."""

    __slots__ = ("data_key", "field", "kind", "max_value", "min_value", "validators")

    def __init__(self, field: Field):
        self.field = field
        self.data_key = field.data_key
        self.kind = _KINDS.get(type(field), _GENERIC)
        self.min_value: int | None = None
        self.max_value: int | None = None
        self.validators: list[Callable[[Any], Any]] = []
        if self.kind == _GENERIC:
            return                      # field.deserialize runs its validators itself
        for validator in field.validators:
            if (self.kind != _INT and type(validator) is validate.Length
                    and validator.equal is None):
                self._bound(validator.min, validator.max)
            elif (self.kind == _INT and type(validator) is validate.Range
                  and validator.min_inclusive and validator.max_inclusive):
                self._bound(validator.min, validator.max)
            else:
                self.validators.append(validator)

    def _bound(self, low: Any, high: Any) -> None:
        if low is not None:
            self.min_value = low if self.min_value is None else max(self.min_value, low)
        if high is not None:
            self.max_value = high if self.max_value is None else min(self.max_value, high)


def compile_schema(schema: GroupFlexScheduleSchema) -> list[FieldPlan] | None:
    """The per-field plan, or None when the schema has something the path cannot mirror."""
    hooks = {tag: [entry[0] for entry in entries]
             for tag, entries in type(schema)._hooks.items() if entries}
    if hooks != _KNOWN_HOOKS:
        return None
    fields = schema.load_fields
    if (set(fields) != set(ScheduleInput._fields) or schema.many or schema.partial
            or schema.unknown != EXCLUDE):
        return None
    plans = []
    for name in ScheduleInput._fields:          # in the order ScheduleInput is built
        field = fields[name]
        if (not field.required or field.allow_none or not field.data_key
                or field.data_key.lower() not in _CANONICAL_NAMES):
            return None
        plans.append(FieldPlan(field))
    return plans


_PLANS = compile_schema(ITEM_SCHEMA)


#: Raw wire name -> the schema's spelling (the pre_load hook's mapping), memoised; bounded so
#: that a client sending many odd names cannot grow it.
_NAMES: dict[str, str] = {}


def _normalize(raw: dict[Any, Any]) -> dict[str, Any] | None:
    """The schema's pre_load: wire names matched case-insensitively (the last one wins)."""
    names = _NAMES
    data = {}
    for name, value in raw.items():
        canon = names.get(name)
        if canon is None:
            if type(name) is not str:
                return None
            canon = _CANONICAL_NAMES.get(name.lower(), name)
            if len(names) < 256:
                names[name] = canon
        data[canon] = value
    return data


def generate(plans: list[FieldPlan]) -> tuple[str, Callable[..., ScheduleInput | None]]:
    """Compile the plans into one straight-line function ``accept(raw, group_id, memos)``.

    Returns its source (for reading and tests) and the function. ``memos`` holds one dict per
    field: a string or date-time value that passed its field's checks once maps to its loaded
    value (batches, and the batches of one integration, repeat plan IDs, years, types and dates
    over and over). Only values that passed are memoised, and the checks depend on nothing but
    the value, so a hit is the same decision. Every check mirrors the field object it was read
    from.
    """
    ns: dict[str, Any] = {
        "MISSING": object(), "N": len(plans), "CANON_KEYS": {p.data_key for p in plans},
        "normalize": _normalize, "encodable": is_utf8_encodable, "parse_datetime": parse_datetime,
        "ValidationError": ValidationError, "SI": ScheduleInput, "TNEW": tuple.__new__,
    }
    out = [
        "def accept(raw, path_group_id, memos):",
        "    if type(raw) is not dict:",
        "        return None",
        "    data = raw if len(raw) == N and raw.keys() == CANON_KEYS else normalize(raw)",
        "    if data is None:",
        "        return None",
    ]
    for i, plan in enumerate(plans):
        v = f"v{i}"
        out.append(f"    {v} = data.get({plan.data_key!r}, MISSING)")
        if plan.kind in (_STR, _UPPER, _DATETIME):
            # Memoised kinds: check a value the first time it is seen in the batch.
            out += [f"    if type({v}) is not str:",
                    "        return None",
                    f"    loaded = memos[{i}].get({v})",
                    "    if loaded is None:"]
            body = []
            if plan.kind == _DATETIME:
                body += ["try:",
                         f"    loaded = parse_datetime({v})",
                         "except ValueError:",
                         "    return None"]
            else:
                body += [f"if '\\x00' in {v} or not ({v}.isascii() or encodable({v})):",
                         "    return None",
                         f"loaded = {v}.upper()" if plan.kind == _UPPER else f"loaded = {v}"]
                body += _bounds(ns, i, plan, "len(loaded)")
            body += _extra_validators(ns, i, plan, "loaded")
            body.append(f"memos[{i}][{v}] = loaded")
            out += ["        " + line for line in body]
            out.append(f"    {v} = loaded")
        elif plan.kind == _INT:
            out += [f"    if type({v}) is not int:", "        return None"]
            out += ["    " + line for line in _bounds(ns, i, plan, v)]
            out += ["    " + line for line in _extra_validators(ns, i, plan, v)]
        else:
            ns[f"field{i}"] = plan.field
            out += ["    try:",
                    f"        {v} = field{i}.deserialize({v})",
                    "    except ValidationError:",
                    "        return None"]
    group = f"v{ScheduleInput._fields.index('group_id')}"
    values = ", ".join(f"v{i}" for i in range(len(plans)))
    out += [f"    if {group} != path_group_id:",
            "        return None",
            f"    return TNEW(SI, ({values},))"]
    source = "\n".join(out) + "\n"
    exec(compile(source, "<flexsvc.rules.fastpath.accept>", "exec"), ns)  # noqa: S102 - our own text
    return source, ns["accept"]


def _bounds(ns: dict[str, Any], i: int, plan: FieldPlan, size: str) -> list[str]:
    lines = []
    if plan.min_value is not None:
        ns[f"min{i}"] = plan.min_value
        lines += [f"if {size} < min{i}:", "    return None"]
    if plan.max_value is not None:
        ns[f"max{i}"] = plan.max_value
        lines += [f"if {size} > max{i}:", "    return None"]
    return lines


def _extra_validators(ns: dict[str, Any], i: int, plan: FieldPlan, value: str) -> list[str]:
    lines = []
    for j, validator in enumerate(plan.validators):
        ns[f"check{i}_{j}"] = validator
        lines += ["try:",
                  f"    if check{i}_{j}({value}) is False:",
                  "        return None",
                  "except ValidationError:",
                  "    return None"]
    return lines


_ACCEPT = generate(_PLANS)[1] if _PLANS is not None else None


def accept_item(raw: Any, path_group_id: str) -> ScheduleInput | None:
    """One item through the fast path alone (None: not accepted). For tests and tools."""
    if _ACCEPT is None:
        return None
    return _ACCEPT(raw, path_group_id, [{} for _ in _PLANS or ()])


def marshmallow_entry(raw: Any, path_group_id: str) -> BatchEntry:
    """The item's entry as marshmallow alone decides it (the contract)."""
    loaded, errors = load_item(raw, path_group_id)
    if loaded is None:
        return ItemResult(400, echo_key(raw), describe_errors(errors))
    return loaded


#: The fast path's memos (``generate``), kept by the process: a payroll integration sends the
#: same few dates, plans and years in batch after batch, and a date parsed once need not be
#: parsed again (measured: docs/PERFORMANCE.md, "Small batches"). Bounded: a field's memo is
#: emptied when a batch starts with more than MEMO_VALUES_KEPT values in it. Threads share
#: them; a dict's get and set are atomic, and a value is the same whoever stored it.
MEMO_VALUES_KEPT = 8192
_MEMOS: list[dict[str, Any]] = [{} for _ in _PLANS or ()]


def load_items(items: Sequence[Any], path_group_id: str) -> list[BatchEntry]:
    """Validate a batch: ScheduleInput per valid item, a 400 ItemResult per invalid one."""
    accept = _ACCEPT
    if accept is None:
        return [marshmallow_entry(raw, path_group_id) for raw in items]
    memos = _MEMOS
    for memo in memos:
        if len(memo) > MEMO_VALUES_KEPT:
            memo.clear()
    entries: list[BatchEntry] = []
    append = entries.append
    for raw in items:
        loaded = accept(raw, path_group_id, memos)
        append(loaded if loaded is not None else marshmallow_entry(raw, path_group_id))
    return entries


class _GcPause:
    """Reference-counted pause of the cyclic garbage collector, shared by a worker's threads.

    Validating, planning, writing and answering a 10,000-item batch allocates some 100,000
    container objects; the collector's generation thresholds make it scan the whole heap many
    times over meanwhile, which doubled the Python cost of a big batch (measured:
    docs/PERFORMANCE.md). Nothing of a batch is cyclic garbage (reference counting frees it), so
    big batches run with the collector paused; it resumes when the last paused request ends, if
    it was on before. The pause starts after the body is read and lasts one batch (seconds at
    most, bounded by the statement and lock timeouts), so cyclic garbage cannot pile up.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._restore = False

    def __call__(self, active: bool = True) -> AbstractContextManager[None]:
        """The pause when ``active``; else a context that does nothing (small batches)."""
        return self._paused() if active else _NOTHING

    @contextmanager
    def _paused(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._restore = gc.isenabled()
                gc.disable()
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and self._restore:
                    gc.enable()


_NOTHING = nullcontext()

#: ``with gc_paused(big):`` around the work of a big batch.
gc_paused = _GcPause()

#: Batches from this many items on run with the collector paused (after their body is read, so
#: a slow upload never keeps it paused).
GC_PAUSE_MIN_ITEMS = 500
