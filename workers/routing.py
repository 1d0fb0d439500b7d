"""Choosing a job's starting tier: the TOML's rules, the batch's bounds, and the context windows."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from tierq.config import Config
from tierq.messages import estimated_prompt_tokens, user_text
from tierq.sections import RuleConfig

_STEP = re.compile(r"^\s*(?:\d{1,2}\s*[.)]|step\s*\d{1,2}\s*[:.)-]?)\s+\S", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Bounds:
    """A batch's tier options: a forced tier, or a minimum and maximum."""

    force: str | None = None
    minimum: str | None = None
    maximum: str | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """The starting tier, or the reason no tier can take the job."""

    tier: str | None
    reason: str


def keyword_pattern(keywords: Sequence[str]) -> re.Pattern[str] | None:
    """One pattern for a rule's keywords: any of them case-insensitively, starting at the start of a word
    and running on into any longer word ("script" matches "scripts" and "scripting", "api" "api_key";
    not "subscription" or "therapy", where they sit inside another word)."""
    if not keywords:
        return None
    parts = []
    for keyword in keywords:
        head = r"\b" if keyword[:1].isalnum() or keyword[:1] == "_" else ""
        tail = r"\w*" if keyword[-1:].isalnum() or keyword[-1:] == "_" else ""
        parts.append(head + re.escape(keyword) + tail)
    return re.compile("|".join(parts), re.IGNORECASE)


class Router:
    """Applies the routing rules of one configuration; build once per process."""

    def __init__(self, config: Config) -> None:
        self.config = config

    @cached_property
    def _compiled(self) -> list[tuple[RuleConfig, list[re.Pattern[str]], re.Pattern[str] | None]]:
        return [
            (rule, [re.compile(p, re.IGNORECASE) for p in rule.patterns], keyword_pattern(rule.keywords))
            for rule in self.config.routing.rules
        ]

    def rule_tier(self, text: str, task_type: str) -> tuple[int, str]:
        """The highest tier any matching rule names (index, reason); the default tier when none match."""
        config = self.config
        best = config.tier_index(config.routing.default_tier or config.tiers[0].name)
        reason = "default tier"
        for rule, patterns, keywords in self._compiled:
            if rule.task_types and task_type not in rule.task_types:
                continue
            if rule.min_chars is not None and len(text) < rule.min_chars:
                continue
            if rule.min_steps is not None and len(_STEP.findall(text)) < rule.min_steps:
                continue
            if keywords is not None and not keywords.search(text):
                continue
            if patterns and not any(p.search(text) for p in patterns):
                continue
            index = config.tier_index(rule.tier)
            if index >= best:
                best, reason = index, f"rule {rule.name!r}"
        return best, reason

    def route(self, messages: list[dict[str, Any]], task_type: str, bounds: Bounds, reserve_tokens: int) -> Route:
        """Pick the starting tier: forced, else rules clamped to the bounds, then up to a tier that fits."""
        config = self.config
        if bounds.force:
            index, reason = config.tier_index(bounds.force), "forced by the batch"
            low = high = index
        else:
            index, reason = self.rule_tier(user_text(messages), task_type)
            low = config.tier_index(bounds.minimum) if bounds.minimum else 0
            high = config.tier_index(bounds.maximum) if bounds.maximum else len(config.tiers) - 1
            index = min(max(index, low), high)
        needed = estimated_prompt_tokens(messages) + reserve_tokens
        for candidate in range(index, high + 1):
            tier = config.tiers[candidate]
            if config.models[tier.models[0]].context_window >= needed:
                suffix = "" if candidate == index else f"; moved up to fit about {needed} tokens"
                return Route(tier.name, reason + suffix)
        return Route(None, f"context: about {needed} tokens fit no allowed tier's model")
