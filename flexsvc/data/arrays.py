"""Array parameters in PostgreSQL's binary array format, built in one pass.

A batch sends its columns as arrays (one element per key). psycopg's generic list dumper
inspects every element to choose the element type, then packs it element by element; for a
10-item batch that was the largest piece of the worker's CPU per request (docs/PERFORMANCE.md,
"Small batches"). The element type of each of our columns is known, so each wrapper below says
it (``Int4Array(keys)``), and its dumper writes the whole array with one ``struct`` call per
array (numbers) or one ``join`` (text). Binary, so no value is ever quoted or escaped: text
travels as its bytes in the connection's encoding, as psycopg's own binary text dumper sends it.

Registered on psycopg's global adapters when this module is imported (before any connection
is opened), for these classes only: every other value keeps psycopg's own dumpers.
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta
from itertools import chain
from typing import Any

import psycopg
from psycopg import postgres
from psycopg.adapt import Dumper
from psycopg.pq import Format


class Int4Array(list[int]):
    """Sent as ``integer[]`` (int4)."""


class TextArray(list[str]):
    """Sent as ``varchar[]``. Elements are text PostgreSQL can store (no NUL)."""


class TimestampArray(list[datetime]):
    """Sent as ``timestamp[]`` (without time zone): naive datetimes, as the rules produce."""


class BoolArray(list[bool]):
    """Sent as ``boolean[]``."""


def _oids(name: str) -> tuple[int, int]:
    info = postgres.types[name]
    return info.oid, info.array_oid


_INT4, _INT4_ARRAY = _oids("int4")
_VARCHAR, _VARCHAR_ARRAY = _oids("varchar")
_TIMESTAMP, _TIMESTAMP_ARRAY = _oids("timestamp")
_BOOL, _BOOL_ARRAY = _oids("bool")

_EMPTY = struct.Struct("!iii")          # ndim 0, no nulls, element oid
_HEADER = struct.Struct("!iiiii")       # ndim 1, has nulls, element oid, length, lower bound 1
_LENGTH = struct.Struct("!i")
_NULL = _LENGTH.pack(-1)
_PG_EPOCH = datetime(2000, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


def _header(element_oid: int, count: int, has_null: bool = False) -> bytes:
    return _HEADER.pack(1, has_null, element_oid, count, 1)


def _interleaved(size: int, values: list[Any]) -> list[Any]:
    """[size, values[0], size, values[1], ...], built by slice assignment (no Python loop)."""
    pairs: list[Any] = [size] * (2 * len(values))
    pairs[1::2] = values
    return pairs


def _fixed(element_oid: int, code: str, size: int, values: list[Any]) -> bytes:
    """A one-dimensional array of non-null fixed-size elements (``code``: struct's letter)."""
    if not values:
        return _EMPTY.pack(0, 0, element_oid)
    return _header(element_oid, len(values)) + struct.pack(
        "!" + ("i" + code) * len(values), *_interleaved(size, values))


class _ArrayDumper(Dumper):
    format = Format.BINARY


class Int4ArrayDumper(_ArrayDumper):
    oid = _INT4_ARRAY

    def dump(self, obj: list[int]) -> bytes:
        return _fixed(_INT4, "i", 4, obj)


class BoolArrayDumper(_ArrayDumper):
    oid = _BOOL_ARRAY

    def dump(self, obj: list[bool]) -> bytes:
        return _fixed(_BOOL, "?", 1, obj)


class TimestampArrayDumper(_ArrayDumper):
    oid = _TIMESTAMP_ARRAY

    def dump(self, obj: list[datetime]) -> bytes:
        # Microseconds since 2000-01-01; naive only: an aware datetime raises TypeError.
        return _fixed(_TIMESTAMP, "q", 8, [(value - _PG_EPOCH) // _MICROSECOND for value in obj])


class TextArrayDumper(_ArrayDumper):
    oid = _VARCHAR_ARRAY

    def __init__(self, cls: type, context: Any = None):
        super().__init__(cls, context)
        # The connection's client encoding, as Python names it (what psycopg's text dumpers use).
        self._encoding = self.connection.info.encoding if self.connection else "utf-8"

    def dump(self, obj: list[str | None]) -> bytes:
        if not obj:
            return _EMPTY.pack(0, 0, _VARCHAR)
        if None in obj:
            return self._dump_with_nulls(obj)
        encoding = self._encoding
        encoded = [value.encode(encoding) for value in obj]
        # Length, bytes, length, bytes ...: iterated in C (map, zip, chain, join).
        return _header(_VARCHAR, len(obj)) + b"".join(
            chain.from_iterable(zip(map(_LENGTH.pack, map(len, encoded)), encoded, strict=True)))

    def _dump_with_nulls(self, obj: list[str | None]) -> bytes:
        parts = [_header(_VARCHAR, len(obj), True)]
        for value in obj:
            if value is None:
                parts.append(_NULL)
            else:
                data = value.encode(self._encoding)
                parts += (_LENGTH.pack(len(data)), data)
        return b"".join(parts)


for _cls, _dumper in ((Int4Array, Int4ArrayDumper), (TextArray, TextArrayDumper),
                      (TimestampArray, TimestampArrayDumper), (BoolArray, BoolArrayDumper)):
    psycopg.adapters.register_dumper(_cls, _dumper)
