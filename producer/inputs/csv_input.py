"""CSV input: a header row, then one job per row, streamed; a bad row is rejected with its line number.

The prompt comes from the column named by `--prompt-field` (default `prompt`, else `text`) or from
`--template`; `id` (or `custom_id`) and `task_type` columns are used when present, and the other
columns become the job's metadata. Line numbers are physical lines of the file, so a quoted field that
spans lines does not shift the numbers of the rows after it.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from producer.inputs.prompts import PromptSpec
from producer.inputs.records import (
    Overlong,
    Record,
    Rejection,
    RejectKind,
    check_id,
    readable_id,
    reject,
    shown_name,
    undecodable_path,
)
from tierq.errors import InputError

DELIMITERS = (",", "\t", ";", "|")
OVERLONG = "the line has "  # how an Overlong line's reason starts
# Python's csv module refuses fields over 128 KiB by default; documents in a cell are often larger.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class _Layout:
    """Which column holds what, checked once against the header."""

    def __init__(self, header: list[str], line_no: int, spec: PromptSpec) -> None:
        seen: set[str] = set()
        for name in header:
            if name in seen:
                raise InputError(f"line {line_no}: the CSV header names column {name!r} twice; rename one")
            seen.add(name)
        self.header, self.spec = header, spec
        spec.check_columns(header)
        self.prompt = spec.field or next((c for c in ("prompt", "text") if c in seen), None)
        if self.prompt is None and spec.template is None:
            raise InputError(f'line {line_no}: the CSV has no "prompt" or "text" column; choose the prompt\'s column '
                             f"with --prompt-field or build it with --template (columns: {', '.join(header)})")
        self.id = next((c for c in ("id", "custom_id") if c in seen), None)
        self.task_type = "task_type" if "task_type" in seen else None
        used = {self.prompt, self.id, self.task_type, *(spec.fields if spec.template else ())}
        self.extra = [(i, c) for i, c in enumerate(header) if c not in used]
        self.index = {name: i for i, name in enumerate(header)}

    def record(self, line_no: int, row: list[str]) -> Record | Rejection:
        """The job of one row whose field count matches the header."""
        custom_id = check_id(line_no, (row[self.index[self.id]] or None) if self.id else None)
        if isinstance(custom_id, Rejection):
            return custom_id
        if self.spec.template is not None:
            built = self.spec.render(dict(zip(self.header, row, strict=True)))
            if built.problem is not None:
                kind = RejectKind.EMPTY_PROMPT if built.empty else RejectKind.MISSING_PROMPT
                return reject(line_no, built.problem.replace("field", "column"), kind, custom_id)
            prompt = built.text
        else:
            assert self.prompt is not None
            prompt = row[self.index[self.prompt]]
            if not prompt.strip():
                return reject(line_no, f'column "{self.prompt}" is empty', RejectKind.EMPTY_PROMPT, custom_id)
        task_type = (row[self.index[self.task_type]].strip() or None) if self.task_type else None
        metadata = {name: row[i] for i, name in self.extra} or None
        return Record(line_no, custom_id, [{"role": "user", "content": prompt}], task_type, metadata)


def sniff_delimiter(header: bytes | None) -> str:
    """The delimiter the header line uses most among comma, tab, semicolon and bar (comma if none)."""
    if not header:
        return ","
    counts = {d: header.count(d.encode()) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def read_csv(lines: Iterable[bytes], spec: PromptSpec, delimiter: str | None = None) -> Iterator[Record | Rejection]:
    """Records of a CSV stream whose first non-blank row is the header (read and checked right away)."""
    if delimiter is None:
        first, lines = _first_line(iter(lines))
        delimiter = sniff_delimiter(first)
    bad: dict[int, str] = {}
    source = _Source(_decoded(lines, bad))
    reader = csv.reader(source, delimiter=delimiter)
    for header in reader:
        if header:
            return _rows(reader, source, _Layout(header, reader.line_num, spec), bad)
    return iter(())


class _Source:
    """The text lines the CSV reader reads, noting when it asked for one past the last. It asks only inside
    a quoted field that the line did not close: a row it returns after that ran into the end of the file
    with its quote still open."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self.ended = False

    def __iter__(self) -> _Source:
        return self

    def __next__(self) -> str:
        try:
            return next(self._lines)
        except StopIteration:
            self.ended = True
            raise


def _rows(reader: Any, source: _Source, layout: _Layout, bad: dict[int, str]) -> Iterator[Record | Rejection]:
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            yield from _skipped(bad, reader.line_num + 1)
            return
        except csv.Error as exc:
            yield reject(start, f"unreadable CSV row ({exc})")
            continue
        yield from _skipped(bad, start)
        if row and source.ended and reader.line_num > start:
            swallowed = reader.line_num - start
            yield reject(start, f"a quoted field that starts on this line is never closed; the {swallowed} lines "
                         'after it were read into it. Close the quote, or write a quote inside a field as two ("")',
                         RejectKind.RAGGED_ROW)
        elif row:
            problem = _row_problem(row, layout.header, start, reader.line_num, bad)
            yield problem if problem is not None else layout.record(start, row)


def _skipped(bad: dict[int, str], before: int) -> Iterator[Rejection]:
    """Lines before `before` that were too long to read: they made no row, but are rejected all the same."""
    for line_no in sorted(n for n, why in bad.items() if n < before and why.startswith(OVERLONG)):
        yield reject(line_no, bad.pop(line_no), RejectKind.TOO_LONG)


def _row_problem(
    row: Sequence[str], header: Sequence[str], start: int, end: int, bad: dict[int, str]
) -> Rejection | None:
    if bad:
        for line_no in range(start, end + 1):
            if line_no in bad:
                why = bad.pop(line_no)
                if line_no != start:
                    why = why.replace("; re-encode", f" of line {line_no}; re-encode")
                if why.startswith(OVERLONG):
                    return reject(start, why, RejectKind.TOO_LONG)
                return _undecodable(row, header, start, why)
    if len(row) == len(header):
        return None
    if end > start and "\n" in row[-1]:
        # A quote that never closes swallows every later line into one field.
        return reject(start, f"a quoted field that starts on this line is not closed until line {end}; the lines "
                      'between were read into it. Close the quote, or write a quote inside a field as two ("")',
                      RejectKind.RAGGED_ROW)
    return reject(start, f"row has {len(row)} fields, the header has {len(header)}", RejectKind.RAGGED_ROW)


def _undecodable(row: Sequence[str], header: Sequence[str], start: int, why: str) -> Rejection:
    """A row with bytes that are not UTF-8 (decoded with "surrogateescape"), naming its column and the row's id
    where the row has the header's columns."""
    if len(row) != len(header):
        return reject(start, why, RejectKind.INVALID_UTF8)
    cells = dict(zip(header, row, strict=True))
    column = next((name for name, cell in cells.items() if undecodable_path(cell) is not None), None)
    if column is not None:
        why = f'column "{shown_name(column)}" has {why}'
    id_column = next((c for c in ("id", "custom_id") if c in cells), None)
    return reject(start, why, RejectKind.INVALID_UTF8,
                  readable_id(start, (cells[id_column] or None) if id_column else None))


def _first_line(lines: Iterator[bytes]) -> tuple[bytes | None, Iterator[bytes]]:
    """The first non-blank line (to find the delimiter), and the lines again from the start."""
    held: list[bytes] = []
    for raw in lines:
        held.append(raw)
        if raw.strip():
            return raw, _chain(held, lines)
    return None, iter(held)


def _chain(held: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    yield from held
    yield from rest


def _decoded(lines: Iterable[bytes], bad: dict[int, str]) -> Iterator[str]:
    """Text lines; a line that is not UTF-8 is noted in `bad` (line -> reason) and decoded losslessly; a
    line too long to read is noted and read as an empty line."""
    for line_no, raw in enumerate(lines, start=1):
        if isinstance(raw, Overlong):
            bad[line_no] = raw.reason
            yield "\n"
            continue
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad[line_no] = f"invalid UTF-8 at byte {exc.start}; re-encode the file as UTF-8"
            yield raw.decode("utf-8", "surrogateescape")
