"""The Kinesis Producer Library's aggregated record format, read and written.

An aggregated record is the 4-byte magic `F3 89 9A C2`, a protobuf `AggregatedRecord` (a table
of partition keys, a table of explicit hash keys, and user records, each naming its keys by
index and carrying its data), and the MD5 of the protobuf bytes. Producers that use the KPL or
aws-kinesis-agg put many user records in one Kinesis record this way; each user record is one
task here, with its own partition key.

The protobuf subset is small and fixed, so it is read and written by hand (about 60 lines)
rather than through the protobuf runtime, which would add a dependency and its import time to
every cold start. Following the KPL's own deaggregators, a record with the magic whose checksum
or body does not hold up is taken as a plain record (and then, not being a task, recorded as
that record's failure).

Example:
    for sub in deaggregate(data):
        task = decode_task(sub.data, f"{sequence}:{sub.index}")
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

MAGIC = b"\xf3\x89\x9a\xc2"
_DIGEST = 16


@dataclass(frozen=True, slots=True)
class UserRecord:
    index: int
    """Its place in the aggregated record (the KCL's sub-sequence number)."""
    partition_key: str
    data: bytes


def is_aggregated(data: bytes) -> bool:
    return len(data) > len(MAGIC) + _DIGEST and data.startswith(MAGIC)


def deaggregate(data: bytes) -> list[UserRecord] | None:
    """The user records of an aggregated record, or None if `data` is not one (no magic, a
    checksum that does not match, or a body that is not the format)."""
    if not is_aggregated(data):
        return None
    body, digest = data[len(MAGIC):-_DIGEST], data[-_DIGEST:]
    if hashlib.md5(body, usedforsecurity=False).digest() != digest:
        return None
    try:
        keys: list[str] = []
        raw: list[tuple[int, bytes]] = []
        for field, value in _fields(body):
            if field == 1 and isinstance(value, bytes):
                keys.append(value.decode())
            elif field == 3 and isinstance(value, bytes):
                raw.append(_user_record(value))
        return [UserRecord(i, keys[key], payload) for i, (key, payload) in enumerate(raw)]
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


def aggregate(records: Sequence[tuple[str, bytes]]) -> bytes:
    """One aggregated record holding `(partition_key, data)` user records, as the KPL writes it."""
    keys: dict[str, int] = {}
    body = bytearray()
    for key, _ in records:
        if key not in keys:
            keys[key] = len(keys)
            body += _tagged(1, key.encode())
    for key, payload in records:
        body += _tagged(3, bytes(_varint_field(1, keys[key])) + _tagged(3, payload))
    return MAGIC + bytes(body) + hashlib.md5(bytes(body), usedforsecurity=False).digest()


OVERHEAD = len(MAGIC) + _DIGEST
"""An aggregated record's bytes besides its key table and user records."""


def key_entry_size(key: str) -> int:
    """What a partition key adds to the key table."""
    size = len(key.encode())
    return 1 + _varint_size(size) + size


def user_record_size(key_index: int, payload: int) -> int:
    """What a user record of `payload` bytes, naming key `key_index`, adds."""
    inner = 1 + _varint_size(key_index) + 1 + _varint_size(payload) + payload
    return 1 + _varint_size(inner) + inner


def aggregated_size(records: Sequence[tuple[str, bytes]]) -> int:
    """The size `aggregate(records)` has, without building it."""
    index = {key: i for i, key in enumerate(dict.fromkeys(k for k, _ in records))}
    return (OVERHEAD + sum(key_entry_size(k) for k in index)
            + sum(user_record_size(index[k], len(p)) for k, p in records))


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def _user_record(body: bytes) -> tuple[int, bytes]:
    key, payload = None, None
    for field, value in _fields(body):
        if field == 1 and isinstance(value, int):
            key = value
        elif field == 3 and isinstance(value, bytes):
            payload = value
    if key is None or payload is None:
        raise ValueError("a user record without its partition key index or data")
    return key, payload


def _fields(body: bytes) -> Iterator[tuple[int, int | bytes]]:
    at = 0
    while at < len(body):
        tag, at = _varint(body, at)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, at = _varint(body, at)
            yield field, value
        elif wire == 2:
            size, at = _varint(body, at)
            if at + size > len(body):
                raise ValueError("a field runs past the end")
            yield field, body[at:at + size]
            at += size
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        else:
            raise ValueError(f"wire type {wire} is not in the format")
    if at != len(body):
        raise ValueError("a field runs past the end")


def _varint(body: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(body) or shift > 63:
            raise ValueError("a truncated varint")
        byte = body[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _varint_field(field: int, value: int) -> bytes:
    return _encode_varint(field << 3) + _encode_varint(value)


def _tagged(field: int, payload: bytes) -> bytes:
    return _encode_varint(field << 3 | 2) + _encode_varint(len(payload)) + payload
