"""Results in the OpenAI Batch API output-file format, so tools that read those files read tierq's.

One line per finished job: an answered job has `response` (status 200 and a `chat.completion` body
whose usage is the answering call's cost row); a failed or cancelled job has `error` with a code and
tierq's reason. `model` is the configured model name that answered.
"""

from __future__ import annotations

from typing import Any

from producer.results import ResultRow

# tierq's outcome of a job's last call, as an error code in the spirit of OpenAI's.
ERROR_CODES = {
    "refusal": "content_refused",
    "empty": "empty_answer",
    "truncated": "max_tokens_reached",
    "invalid": "invalid_answer",
    "error": "server_error",
    "http_5xx": "server_error",
    "http_4xx": "invalid_request",
    "connection": "provider_unreachable",
    "rate_limited": "rate_limit_exceeded",
    "timeout": "timeout",
}


def as_openai(row: ResultRow) -> dict[str, Any]:
    """One line of an OpenAI Batch API output file."""
    line: dict[str, Any] = {
        "id": f"batch_req_{row.job_id}",
        "custom_id": row.custom_id,
        "response": None,
        "error": None,
    }
    if row.status == "succeeded":
        # A succeeded job always has its answering cost row; the fallback keeps a damaged one readable.
        answer = row.answer or {"id": f"job-{row.job_id}", "created": row.finished or 0, "model": row.model,
                                "prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0}
        request_id = f"req_{answer['id'].replace('-', '')}"
        line["response"] = {"status_code": 200, "request_id": request_id, "body": _completion(row, answer)}
    else:
        line["error"] = {"code": error_code(row), "message": row.error or f"the job {row.status}"}
    return line


def _completion(row: ResultRow, answer: dict[str, Any]) -> dict[str, Any]:
    prompt, completion, cached = answer["prompt_tokens"], answer["completion_tokens"], answer["cached_tokens"]
    return {
        "id": f"chatcmpl-{answer['id'].replace('-', '')}",
        "object": "chat.completion",
        "created": answer["created"],
        "model": row.model or answer["model"],
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": row.content, "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
        "system_fingerprint": None,
    }


def error_code(row: ResultRow) -> str:
    """Why the job has no answer, as a short code."""
    if row.status == "cancelled":
        return "batch_cancelled"
    if not row.calls:
        return "context_length_exceeded" if (row.error or "").startswith("context:") else "not_routed"
    return ERROR_CODES.get(row.calls[-1]["outcome"], "failed")
