"""Text kept out of Postgres for `--no-store-text` batches: prompts until answered, answers until read.

Postgres keeps only SHA-256 digests; the texts live in Redis with a TTL. A prompt is deleted once its
job is final, an answer the first time `tierq results` returns it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import redis

DEFAULT_TTL_S = 7 * 24 * 3600


def digest(text: str) -> str:
    """The SHA-256 of a text, as Postgres keeps it instead of the text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def redacted(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages with each text replaced by its digest and length (what Postgres stores)."""
    out = []
    for message in messages:
        text = json.dumps(message.get("content"), ensure_ascii=False, sort_keys=True)
        out.append({"role": message.get("role"), "sha256": digest(text), "chars": len(text)})
    return out


class TextVault:
    """Prompts and answers of private batches in Redis, keyed by job id."""

    def __init__(self, client: redis.Redis, prefix: str = "tq:v", ttl_s: int = DEFAULT_TTL_S) -> None:
        self.r, self.p, self.ttl = client, prefix, ttl_s

    def put_prompts(self, prompts: Mapping[int, list[dict[str, Any]]]) -> None:
        """Keep the real messages of jobs whose rows hold only digests."""
        pipe = self.r.pipeline(transaction=False)
        for job_id, messages in prompts.items():
            pipe.set(f"{self.p}:q:{job_id}", json.dumps(messages, ensure_ascii=False), ex=self.ttl)
        pipe.execute()

    def prompts(self, job_ids: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
        """The messages still held for these jobs (a job whose text expired is missing)."""
        ids = list(job_ids)
        values = cast(list[bytes | None], self.r.mget([f"{self.p}:q:{i}" for i in ids])) if ids else []
        return {i: json.loads(v) for i, v in zip(ids, values, strict=True) if v is not None}

    def forget_prompts(self, job_ids: Iterable[int]) -> None:
        """Delete the messages of jobs that are final."""
        keys = [f"{self.p}:q:{i}" for i in job_ids]
        if keys:
            self.r.delete(*keys)

    def put_answers(self, answers: Mapping[int, str]) -> None:
        """Hold answers until they are read once."""
        pipe = self.r.pipeline(transaction=False)
        for job_id, content in answers.items():
            pipe.set(f"{self.p}:a:{job_id}", content, ex=self.ttl)
        pipe.execute()

    def answer(self, job_id: int) -> str | None:
        """The answer held for a job, left in place (an audit reads the candidate it may replace)."""
        value = cast(bytes | None, self.r.get(f"{self.p}:a:{job_id}"))
        return value.decode("utf-8") if value is not None else None

    def take_answer(self, job_id: int) -> str | None:
        """The answer, removed as it is read: a second read gets None."""
        value = cast(bytes | None, self.r.getdel(f"{self.p}:a:{job_id}"))
        return value.decode("utf-8") if value is not None else None
