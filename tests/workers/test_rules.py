"""Routing rules and answer judging, as plain functions."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.enums import CallOutcome
from tierq.config import load_config
from tierq.messages import user_text
from tierq.sections import AnswerConfig
from workers.answers import judge
from workers.routing import Bounds, Router

CONFIG = load_config(Path(__file__).resolve().parents[2] / "tierq" / "configs" / "sim.toml")


NO_BOUNDS = Bounds()


def route(prompt: str, bounds: Bounds = NO_BOUNDS, reserve: int = 0, system: str | None = None) -> str | None:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return Router(CONFIG).route(messages, "default", bounds, reserve).tier


@pytest.mark.parametrize(
    ("prompt", "tier"),
    [
        ("Where is my parcel?", "hot"),
        ("Your API gives me a 500", "warm"),
        ("STACK TRACE attached", "warm"),
        ("1. do this\n2. then that\n3. and finally this", "warm"),
        ("1. do this\n2. then that", "hot"),
        ("Step 1: log in\nStep 2: open settings\nStep 3: export", "warm"),
        ("x" * 4000, "warm"),
        ("Please design a system for our API", "cold"),  # the highest matching rule wins
        # Keywords match from the start of a word on, not inside another word.
        ("How do I pause my subscription?", "hot"),  # not "script"
        ("Is therapy covered by the rapid plan?", "hot"),  # not "api"
        ("Two scripts crash on start", "warm"),
        ("Our APIs time out", "warm"),
        ("Where do I put my api_key?", "warm"),
        ("Scripting the export fails", "warm"),
        ("My JavaScript and PostgreSQL setup", "warm"),  # compounds are keywords of their own
        ("see ```code``` here", "warm"),  # a keyword that is not a word matches anywhere
        ("Can you design an onboarding flow?", "cold"),  # "design a" runs on into "an"
    ],
)
def test_rules_pick_the_highest_matching_tier(prompt: str, tier: str) -> None:
    assert route(prompt) == tier


def test_rules_ignore_the_system_prompt() -> None:
    assert route("Where is my parcel?", system="You are an API architecture expert") == "hot"
    assert (
        user_text([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
        == "a\nb"
    )


def test_bounds_and_context() -> None:
    assert route("Your API is down", Bounds(maximum="hot")) == "hot"
    assert route("Where is my parcel?", Bounds(minimum="warm")) == "warm"
    assert route("Please design a new architecture", Bounds(force="hot")) == "hot"
    assert route("Where is my parcel?", reserve=40_000) == "warm"
    assert route("Where is my parcel?", Bounds(maximum="hot"), reserve=40_000) is None


RULES = AnswerConfig()


@pytest.mark.parametrize(
    ("content", "refusal", "finish", "outcome"),
    [
        ("Your parcel ships today.", None, "stop", CallOutcome.OK),
        ("", None, "content_filter", CallOutcome.REFUSAL),
        (None, "I can't help with that.", "stop", CallOutcome.REFUSAL),
        ("I'm sorry, but I can't help with that.", None, "stop", CallOutcome.REFUSAL),
        ("Your parcel", None, "length", CallOutcome.TRUNCATED),
        ("   ", None, "stop", CallOutcome.EMPTY),
        (None, None, "stop", CallOutcome.EMPTY),
    ],
)
def test_judge(content: str | None, refusal: str | None, finish: str, outcome: CallOutcome) -> None:
    assert judge(content, refusal, finish, RULES).outcome is outcome


def test_minimum_length_is_configurable() -> None:
    assert judge("ok", None, "stop", AnswerConfig(min_chars=5)).outcome is CallOutcome.EMPTY
