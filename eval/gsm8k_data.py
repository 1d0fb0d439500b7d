"""The GSM8K recorded answers: questions, each model's answer and correctness label, and what each call costs.

Tokens are counted as the replaying simulator counts them (4 characters a token, 4 tokens of framing
per message), so the offline policies and a pipeline run through the simulator price the same calls alike.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from fakellm.answers import count_tokens, prompt_tokens
from tierq.config import Config
from tierq.money import Usage

CHEAP = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG = "gpt-4-1106-preview"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "gsm8k-responses" / "gsm8k_responses.csv"


@dataclass(frozen=True, slots=True)
class Question:
    """One GSM8K question with both recorded answers; the labels are used only for scoring."""

    index: int
    prompt: str
    cheap_answer: str
    strong_answer: str
    cheap_correct: bool
    strong_correct: bool
    cheap_cost: Decimal
    strong_cost: Decimal


def call_cost(config: Config, model: str, prompt: str, answer: str) -> Decimal:
    """The cost of one call as the pipeline bills it: one user message, the recorded answer."""
    return config.price(model).cost(Usage(prompt_tokens([prompt]), count_tokens(answer)))


def load(path: Path, config: Config) -> list[Question]:
    """Read the dataset; SystemExit with a hint when it is not there (a clone outside this workplace)."""
    if not path.exists():
        raise SystemExit(f"{path} not found: the GSM8K recorded answers live in ../shared/datasets/gsm8k-responses "
                         "beside the project; pass --data FILE")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    questions = []
    with path.open(newline="", encoding="utf-8") as handle:
        for index, row in enumerate(csv.DictReader(handle)):
            prompt, cheap, strong = row["prompt"], row[CHEAP + "_response"], row[STRONG + "_response"]
            questions.append(Question(
                index, prompt, cheap, strong, row[CHEAP] == "True", row[STRONG] == "True",
                call_cost(config, CHEAP, prompt, cheap), call_cost(config, STRONG, prompt, strong),
            ))
    return questions
