"""Reading input as a stream of records and rejections, never holding the whole file.

The format is told by the first non-blank line (a JSON object with `custom_id` and `body` is an OpenAI
Batch API request file, any other JSON object is tierq's JSONL, anything else is CSV), or forced. A first
line that is broken JSON, or no JSON before lines that all are, does not decide: the lines after it do
(docs/producer.md, "Formats").
"""

from __future__ import annotations

import itertools
import json
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from producer.inputs.csv_input import read_csv, sniff_delimiter
from producer.inputs.openai_input import read_openai_batch
from producer.inputs.prompts import PromptSpec
from producer.inputs.records import (
    Overlong,
    Record,
    Rejection,
    RejectKind,
    parse_jsonl_line,
    record_from_object,
    reject,
)
from tierq.errors import InputError

FORMATS = ("auto", "jsonl", "csv", "openai")
BOM = b"\xef\xbb\xbf"
DEFAULT_MAX_LINE_BYTES = 32 * 2**20
SNIFF_BYTES = 4096
LOOKAHEAD_LINES = 100  # when the first line is broken JSON, the lines that may tell the format instead
CSV_CHECK_LINES = 5  # a first line that is not JSON is a CSV header unless these lines after it are all JSON
READ_BLOCK = 2**20
# Files people mistake for input, by their first bytes.
_UNPACK = "decompress it first: {} FILE | tierq submit -"
MAGIC = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image", b"%PDF": "a PDF",
         b"PK\x03\x04": "a ZIP archive (an .xlsx or .docx is one: export it as CSV)",
         b"\x1f\x8b": f"gzip data ({_UNPACK.format('zcat')})", b"\xfd7zXZ\x00": f"xz data ({_UNPACK.format('xzcat')})",
         b"\x28\xb5\x2f\xfd": f"zstd data ({_UNPACK.format('zstdcat')})",
         b"PAR1": "a Parquet file", b"SQLite format 3": "an SQLite database", b"\xd0\xcf\x11\xe0": "an old Office file"}


def max_line_bytes(max_context_tokens: int) -> int:
    """The longest line worth reading: 8 bytes (UTF-8 and JSON escapes) per character of the largest
    context window (4 characters a token), and never less than the default."""
    return max(DEFAULT_MAX_LINE_BYTES, 8 * 4 * max_context_tokens)


def looks_binary(first: bytes) -> str | None:
    """What a file whose first line is `first` is, when it is not text (None when it looks like text)."""
    for magic, what in MAGIC.items():
        if first.startswith(magic):
            return what
    head = first[:SNIFF_BYTES]
    if b"\x00" in head:
        return "binary data"
    controls = sum(1 for byte in head if byte < 32 and byte not in (9, 10, 13, 12))
    return "binary data" if head and controls > len(head) // 10 else None


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How to read an input: its format (`auto` tells by content) and where each record's prompt is."""

    format: str = "auto"
    prompt_field: str | None = None
    template: str | None = None

    @property
    def spec(self) -> PromptSpec:
        """The prompt's source, checked (a bad template fails here, before anything is submitted)."""
        return PromptSpec(self.prompt_field, self.template)


class LineSource:
    """The binary lines of a stream, counted for progress; the first non-blank line can be peeked at.

    A line longer than `max_line_bytes` is never held in memory: it comes out as an `Overlong`."""

    def __init__(self, stream: IO[bytes], max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self._stream = stream
        self._held: list[bytes] = []
        self.max_line_bytes = max_line_bytes
        self.lines = 0
        self.bytes = 0
        self.size = _size(stream)

    def _read(self) -> Iterator[bytes]:
        limit = self.max_line_bytes
        while True:
            raw = self._stream.readline(limit + 1)
            if not raw:
                return
            if len(raw) <= limit or raw.endswith(b"\n"):
                yield raw
                continue
            head, size = raw[:SNIFF_BYTES], len(raw)
            while not raw.endswith(b"\n"):  # the rest of the line, a block at a time, not kept
                raw = self._stream.readline(READ_BLOCK)
                if not raw:
                    break
                size += len(raw)
            yield Overlong(head, size, limit)

    def peek(self) -> bytes | None:
        """The first non-blank line (without a byte-order mark), left in place for iteration."""
        for raw in self._held:
            if raw.strip(BOM + b" \t\r\n"):
                return raw.removeprefix(BOM)
        for raw in self._read():
            self._held.append(raw)
            if raw.strip(BOM + b" \t\r\n"):
                return raw.removeprefix(BOM)
        return None

    def lookahead(self, lines: int, max_bytes: int) -> Iterator[bytes]:
        """The non-blank lines after the first, read as they are asked for (up to `lines` of them, and no
        more once `max_bytes` are held) and left in place for iteration; lines too long to keep are skipped."""
        reader, index, nonblank, size = self._read(), 0, 0, 0
        while nonblank <= lines and size <= max_bytes:
            if index == len(self._held):
                raw = next(reader, None)
                if raw is None:
                    return
                self._held.append(raw)
            raw = self._held[index]
            index, size = index + 1, size + len(raw)
            if raw.strip(BOM + b" \t\r\n"):
                nonblank += 1
                if nonblank > 1 and not isinstance(raw, Overlong):
                    yield raw

    def __iter__(self) -> Iterator[bytes]:
        held, self._held = self._held, []
        for raw in itertools.chain(held, self._read()):
            self.lines += 1
            self.bytes += raw.size if isinstance(raw, Overlong) else len(raw)
            # Spreadsheet exports often start with a UTF-8 byte-order mark, which is not part of the data.
            yield raw[3:] if self.lines == 1 and raw.startswith(BOM) and not isinstance(raw, Overlong) else raw


def _size(stream: IO[bytes]) -> int | None:
    """The size of a regular file, for a progress bar; None for pipes and terminals."""
    try:
        info = os.fstat(stream.fileno())
    except (OSError, AttributeError, ValueError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def detect_format(first: bytes | None, following: Iterable[bytes] = ()) -> str:
    """`openai`, `jsonl` or `csv`, from the first non-blank line. One bad first line does not decide for the
    lines after it: when it starts as JSON but is broken, the first of the `following` lines that is JSON
    decides (a broken first request must not make an OpenAI batch file tierq's JSONL, whose reader rejects
    every request of it); when it is not JSON at all (a stray heading or log line) but the next lines are all
    JSON objects, it is the one bad record of a JSON file rather than the header of a CSV."""
    if first is None:
        return "jsonl"
    if not first.lstrip().startswith(b"{"):
        ahead = list(itertools.islice(following, CSV_CHECK_LINES))
        objects = [obj for obj in map(_json_object, ahead) if obj is not None]
        return _json_kind(objects[0]) if ahead and len(objects) == len(ahead) else "csv"
    for line in itertools.chain((first,), following):
        obj = _json_object(line)
        if obj is not None:
            return _json_kind(obj)
    return "jsonl"


def _json_object(line: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _json_kind(obj: dict[str, Any]) -> str:
    return "openai" if "custom_id" in obj and "body" in obj else "jsonl"


def read_records(
    source: LineSource, fmt: str = "auto", spec: PromptSpec | None = None
) -> tuple[str, Iterator[Record | Rejection]]:
    """The format used and the records of `source`; `fmt` is one of FORMATS."""
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r} is not a format; use one of {', '.join(FORMATS)}")
    first = source.peek()
    binary = looks_binary(first) if first is not None else None
    if binary is not None:
        raise InputError(f"the input is not a JSONL, CSV or OpenAI batch file: it looks like {binary}")
    chosen = detect_format(first, source.lookahead(LOOKAHEAD_LINES, SNIFF_BYTES * 256)) if fmt == "auto" else fmt
    spec = spec or PromptSpec()
    if chosen == "openai":
        if spec.field or spec.template:
            raise InputError("--prompt-field and --template apply to JSONL and CSV input; "
                             "an OpenAI batch request file has its prompt in body.messages")
        return chosen, read_openai_batch(source)
    if chosen == "csv":
        return chosen, read_csv(source, spec, sniff_delimiter(source.peek()))
    return chosen, read_jsonl(source, spec)


def read_jsonl(stream: IO[bytes] | LineSource, spec: PromptSpec | None = None) -> Iterator[Record | Rejection]:
    """Records of a JSONL stream; blank lines are skipped, every other line is a record or a rejection."""
    source = stream if isinstance(stream, LineSource) else LineSource(stream)
    for line_no, raw in enumerate(source, start=1):
        if isinstance(raw, Overlong):
            yield reject(line_no, raw.reason, RejectKind.TOO_LONG)
        elif raw.strip():
            yield parse_jsonl_line(line_no, raw.rstrip(b"\r\n"), spec)


def from_objects(objects: Iterable[Any], spec: PromptSpec | None = None) -> Iterator[Record | Rejection]:
    """Records from Python objects (the API's `submit`), numbered from 1 like lines."""
    for n, obj in enumerate(objects, start=1):
        if isinstance(obj, str):
            obj = {"prompt": obj}
        if not isinstance(obj, dict):
            yield Rejection(n, f"record {n}: a {type(obj).__name__}, not a dict or a string")
            continue
        yield record_from_object(n, obj, spec)
