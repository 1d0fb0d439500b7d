"""Reading input files as a stream of records and rejections, never holding the whole file."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import IO, Any

from producer.records import Record, Rejection, parse_jsonl_line, record_from_object


def read_jsonl(stream: IO[bytes]) -> Iterator[Record | Rejection]:
    """Records of a JSONL stream; blank lines are skipped, every other line is a record or a rejection."""
    for line_no, raw in enumerate(stream, start=1):
        if raw.strip():
            yield parse_jsonl_line(line_no, raw.rstrip(b"\r\n"))


def from_objects(objects: Iterable[Any]) -> Iterator[Record | Rejection]:
    """Records from Python objects (the API's `submit`), numbered from 1 like lines."""
    for n, obj in enumerate(objects, start=1):
        if isinstance(obj, str):
            obj = {"prompt": obj}
        if not isinstance(obj, dict):
            yield Rejection(n, f"record {n}: a {type(obj).__name__}, not a dict or a string")
            continue
        yield record_from_object(n, obj)
