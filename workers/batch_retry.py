"""A provider batch's request that failed for a reason that may pass is tried again at its tier, as an
interactive call's would be (workers/calls.py), not escalated or failed for it at once.

Such a request is a line with HTTP 408, 409, 429 or a 5xx (the provider's own failure, billed nothing), or,
at the last tier with `batch_fallback = "next"` (there is no next tier to send it to), one an expired batch
never ran; a batch the provider refused, failed or cancelled whole is not tried again (it would only be
refused again). Its job goes back to the tier's queue under a new message, whose first step puts it in the
next provider file (or answers it interactively, when its batch's deadline no longer leaves a window). Each
provider batch at the tier that held the request is one try: after `max_retries` more than the first, the
job escalates or, at the last tier, fails, its reason saying how many provider batches failed it. Other
failed lines (HTTP 400, 404, ...) escalate as before.
"""

from __future__ import annotations

from collections.abc import Iterable

from models import provider_batch as pb
from models.provider_batch import ProviderBatch
from tierq.config import TierConfig
from workers.calls import TierResult
from workers.context import WorkerContext


def passing(result: TierResult) -> bool:
    """Whether the job's line in the provider batch failed for a reason that may pass."""
    return result.answer is None and bool(result.records) and result.records[-1].retryable


def try_again(ctx: WorkerContext, tier: TierConfig, found: ProviderBatch, results: Iterable[TierResult]) -> None:
    """Mark each result to be tried again at the tier (`TierResult.again`) while its tries last, and say in
    its reason when they ran out."""
    chosen = list(results)
    if not chosen:
        return
    with ctx.engine.connect() as conn:
        tries = pb.times_sent(conn, [result.job_id for result in chosen], found.tier)
    allowed = tier.max_retries + 1
    for result in chosen:
        done = max(tries.get(result.job_id, 0), 1)  # this batch is one, whatever the rows say
        if done < allowed:
            result.again = True
            result.reason = f"{result.reason}; sent again in a new provider batch (try {done + 1} of {allowed})"
        else:
            result.reason = (f"{result.reason}; failed in {done} provider batches, and max_retries "
                             f"({tier.max_retries}) allows no more")
