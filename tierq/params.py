"""Request parameters: which ones tierq passes to the model, and which ones change the answer."""

from __future__ import annotations

# Passed to the chat completions call; anything else in a job's parameters is not sent.
PASSED_PARAMS = frozenset({
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "response_format", "seed", "stop",
    "presence_penalty", "frequency_penalty", "logit_bias", "user", "reasoning_effort",
})

# Part of the cache namespace: two requests that differ in one of these may get different answers.
ANSWER_PARAMS = tuple(sorted(PASSED_PARAMS - {"user"}))
