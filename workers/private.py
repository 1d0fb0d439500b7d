"""Jobs of `--no-store-text` batches: their texts come from the Redis vault and their answers go there."""

from __future__ import annotations

from dataclasses import replace

from models.lifecycle import Candidate
from tierq.vault import TextVault, digest
from workers.store import ClaimedJob, PendingJob, with_system

EXPIRED = "privacy: the prompt's text is no longer in Redis (its TTL ran out); submit the record again"


def reveal_pending(vault: TextVault, jobs: list[PendingJob]) -> tuple[list[PendingJob], list[int]]:
    """Pending jobs with their real messages, and the private jobs whose text expired."""
    texts = vault.prompts(job.id for job in jobs if job.private)
    ready = [replace(job, messages=texts[job.id]) if job.private else job for job in jobs
             if not job.private or job.id in texts]
    return ready, [job.id for job in jobs if job.private and job.id not in texts]


def reveal_claimed(vault: TextVault, jobs: list[ClaimedJob]) -> tuple[list[ClaimedJob], list[int]]:
    """Claimed jobs with their real messages (system prompt first), and those whose text expired."""
    texts = vault.prompts(job.id for job in jobs if job.private)
    ready = [replace(job, messages=with_system(texts[job.id], job.system_prompt)) if job.private else job
             for job in jobs if not job.private or job.id in texts]
    return ready, [job.id for job in jobs if job.private and job.id not in texts]


def seal_answers(
    vault: TextVault, jobs: list[ClaimedJob], answers: list[tuple[int, str | None, str, int]]
) -> tuple[list[tuple[int, str | None, str, int]], dict[int, str]]:
    """Move private jobs' answers into the vault; Postgres gets None and the digest instead."""
    private = {job.id for job in jobs if job.private}
    if not private:
        return answers, {}
    vault.put_answers({a[0]: a[1] or "" for a in answers if a[0] in private})
    digests = {a[0]: digest(a[1] or "") for a in answers if a[0] in private}
    return [(a[0], None, a[2], a[3]) if a[0] in private else a for a in answers], digests


def seal_audits(
    vault: TextVault, jobs: list[ClaimedJob], audits: list[Candidate], settled: list[tuple[Candidate, bool]]
) -> tuple[list[Candidate], list[tuple[Candidate, bool]], dict[int, str]]:
    """Private jobs' answers under audit, and those kept after one, go to the vault (Postgres gets None
    and, for a kept answer, its digest)."""
    private = {job.id for job in jobs if job.private}
    if not private:
        return audits, settled, {}
    vault.put_answers({c.job_id: c.content or "" for c in audits if c.job_id in private})
    vault.put_answers({c.job_id: c.content or "" for c, replaced in settled if c.job_id in private and replaced})
    digests = {}
    for kept, _ in settled:
        if kept.job_id in private:
            text = kept.content if kept.content is not None else vault.answer(kept.job_id)
            digests[kept.job_id] = digest(text or "")
    return ([replace(c, content=None) if c.job_id in private else c for c in audits],
            [(replace(c, content=None), r) if c.job_id in private else (c, r) for c, r in settled], digests)
