"""Output-file lines that match no request of their batch (`batch_stray_lines`), for testing a client's
reading of a provider's faulty output: one line of each kind the config names, made from the batch's first
answered line.

- "malformed": that line cut in half, so not JSON; it bills nothing.
- "no_custom_id": a copy of that answer without its `custom_id`, billed again (a second completion).
- "unknown_custom_id": the same under a `custom_id` no request of the batch had, billed again.
- "duplicate": the same under that line's own `custom_id` (a second line for one request), billed again.
"""

from __future__ import annotations

import json
import os
from typing import Any

from fakellm.batch_job import BatchJob, LineResult
from fakellm.state import SimState


def stray_lines(state: SimState, job: BatchJob, answered: list[LineResult]) -> list[bytes]:
    """The stray lines for the batch's output file (none when it answered nothing)."""
    if not answered or not state.config.batch_stray_lines:
        return []
    first = answered[0]
    lines = []
    for number, kind in enumerate(state.config.batch_stray_lines, 1):
        line = first.as_json()
        if kind == "malformed":
            text = json.dumps(line, ensure_ascii=False)
            lines.append(text[: len(text) // 2].encode() + b"\n")
            continue
        custom_id = f"stray-{job.id}-{number}"
        if kind == "no_custom_id":
            del line["custom_id"]
        elif kind == "duplicate":
            custom_id = str(line["custom_id"])
        else:
            line["custom_id"] = custom_id
        _bill(state, job, custom_id, first.body)
        lines.append(json.dumps(line, ensure_ascii=False).encode() + b"\n")
    return lines


def _bill(state: SimState, job: BatchJob, custom_id: str, body: dict[str, Any] | None) -> None:
    """Count a stray answer in the batch ledger, as the provider bills it."""
    usage = (body or {}).get("usage") or {}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    state.stats.batch.record_billed("chatcmpl-" + os.urandom(12).hex(), str((body or {}).get("model")), "ok",
                                    (usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0), cached),
                                    {"batch_id": job.id, "custom_id": custom_id})
