"""Answers the simulator does not invent: a literal named in the prompt, or a recorded dataset.

- `[[sim:say=TEXT]]` or `[[sim:say@MODEL=TEXT]]` in any message makes the answer TEXT (on MODEL only);
  TEXT runs to the first `]]`.
- Replay: a CSV of real recorded answers in the layout of the GSM8K-responses dataset (a `prompt`
  column and a `<recorded model>_response` column per model). Each simulated model the map names
  answers a prompt with the text its recorded model gave; prompts match by exact text after
  whitespace is normalised, trying the last message first. A mapped model asked a prompt the file
  does not hold answers HTTP 400 (an unmapped model still invents its answer), so a replay run never
  mixes invented answers into real ones silently.

Failure rates, latency and markers still apply; usage is counted as for invented answers (4 characters
a token), so the completion tokens of a replayed answer follow the recorded text's length.
"""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fakellm.answers import Answer, count_tokens, make_answer, truncated
from fakellm.behaviour import Decision, ModelBehaviour, Outcome, ReplaySource
from fakellm.parsing import BadRequest

_SAY = re.compile(r"\[\[sim:say(?:@([^=\]]+))?=(.*?)\]\]", re.DOTALL)
RESPONSE_SUFFIX = "_response"


def said(texts: Sequence[str], model: str) -> str | None:
    """The literal a `[[sim:say...]]` marker asks `model` to answer; one aimed at the model wins."""
    general: str | None = None
    for text in texts:
        if "[[sim:say" not in text:
            continue
        for match in _SAY.finditer(text):
            if match.group(1) == model:
                return match.group(2)
            if match.group(1) is None and general is None:
                general = match.group(2)
    return general


def parse_map(spec: str) -> dict[str, str]:
    """Parse "sim-nano=recorded-a,sim-flagship=recorded-b" into {simulated: recorded}."""
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        simulated, sep, recorded = part.partition("=")
        if not sep or not simulated.strip() or not recorded.strip():
            raise ValueError(f"--replay-map entry {part!r} is not SIMULATED=RECORDED")
        mapping[simulated.strip()] = recorded.strip()
    if not mapping:
        raise ValueError("--replay-map names no model; give SIMULATED=RECORDED[,...]")
    return mapping


def normalise(text: str) -> str:
    """The form prompts are matched in: whitespace runs become one space, ends trimmed."""
    return " ".join(text.split())


@dataclass(frozen=True)
class ReplayBook:
    """Recorded answers by normalised prompt and recorded model, and the simulated models that replay them."""

    source: str
    models: Mapping[str, str]
    answers: Mapping[str, Mapping[str, str]]  # recorded model -> normalised prompt -> text

    @classmethod
    def load(cls, spec: ReplaySource) -> ReplayBook:
        """Read the CSV; ValueError names a mapped model the file has no `<model>_response` column for."""
        path = Path(spec.file)
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # recorded answers can be long
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            if "prompt" not in columns:
                raise ValueError(f"{path}: no 'prompt' column; a replay file needs prompt and <model>_response")
            recorded = {c[: -len(RESPONSE_SUFFIX)] for c in columns if c.endswith(RESPONSE_SUFFIX)}
            missing = sorted(set(spec.models.values()) - recorded)
            if missing:
                raise ValueError(f"{path}: no recorded answers of {missing}; it has {sorted(recorded)}")
            answers: dict[str, dict[str, str]] = {m: {} for m in set(spec.models.values())}
            for row in reader:
                prompt = normalise(row["prompt"] or "")
                for model, by_prompt in answers.items():
                    by_prompt.setdefault(prompt, row[model + RESPONSE_SUFFIX] or "")
        return cls(str(path), dict(spec.models), answers)

    def recorded(self, model: str, texts: Sequence[str]) -> str | None:
        """The recorded answer for a request to `model`.

        None for an unmapped model; BadRequest for an unknown prompt.
        """
        source_model = self.models.get(model)
        if source_model is None:
            return None
        by_prompt = self.answers[source_model]
        for text in reversed(texts):
            found = by_prompt.get(normalise(text))
            if found is not None:
                return found
        raise BadRequest(
            f"replay: {model} replays {source_model} from {Path(self.source).name}, which has no recorded answer "
            "for this prompt (matched by exact text, whitespace normalised); submit prompts as recorded",
            "messages",
        )


def scripted(texts: Sequence[str], model: str, book: ReplayBook | None) -> str | None:
    """The answer text a marker or the replay file sets for this request, if any."""
    literal = said(texts, model)
    if literal is not None:
        return literal
    return book.recorded(model, texts) if book is not None else None


def scripted_answer(text: str, decision: Decision, behaviour: ModelBehaviour, max_tokens: int | None) -> Answer:
    """The billed answer built from a scripted text; refusals and empty answers stay as simulated."""
    if decision.outcome in (Outcome.REFUSAL, Outcome.EMPTY):
        return make_answer(decision, behaviour, max_tokens)
    finish = "stop"
    if decision.outcome is Outcome.TRUNCATE:
        text, finish = truncated(text, decision.prompt_hash), "length"
    if max_tokens is not None and count_tokens(text) > max_tokens:
        text, finish = text[: max_tokens * 4], "length"
    return Answer(content=text, refusal=None, finish_reason=finish, completion_tokens=count_tokens(text))
