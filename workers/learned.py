"""The learned routers a worker uses: the active version per task type, looked up again every `poll_s`.

Decision (a), in classify: a prompt the router scores below its start threshold starts at the strong
tier instead of the cheap one. Decision (b), in the cheap tier's worker: an answer that passed its
validator but scores below the escalation threshold is marked `invalid` ("router: ...") and escalates.
A router never overrides a batch's forced tier or its maximum, and never judges audits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, text

from tierq.config import Config
from tierq.messages import user_text
from tierq.router.features import LogprobSummary
from tierq.router.fit import Router

log = logging.getLogger(__name__)
ROUTER_REASON = "router:"  # how a router's escalation reads in a cost row's error (never a label for it)


@dataclass(frozen=True, slots=True)
class Active:
    """One task type's active router version."""

    version: int
    cheap_tier: str
    strong_tier: str
    router: Router


@dataclass(frozen=True, slots=True)
class Doubt:
    """A router's verdict against a valid cheap answer: why, and the tier the job goes on to."""

    reason: str
    tier: str


SecondLook = Callable[[str, LogprobSummary | None], Doubt | None]


class LearnedRoutes:
    """Active router versions of one process, refreshed at most every `[router] poll_s`."""

    def __init__(self, engine: Engine, config: Config) -> None:
        self.engine = engine
        self.config = config
        self._active: dict[str, Active] = {}
        self._unusable: set[tuple[str, int]] = set()  # versions already warned about: once per version
        self._checked = float("-inf")
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Look for newly activated versions, if `poll_s` has passed since the last look."""
        self._refresh()

    def _refresh(self) -> dict[str, Active]:
        now = time.monotonic()
        if now - self._checked < self.config.router.poll_s:
            return self._active
        with self._lock:
            if now - self._checked < self.config.router.poll_s:
                return self._active
            try:
                self._active = self._load()
            except Exception as exc:  # the router only saves money: routing goes on with what was loaded
                log.warning("could not look up learned routers (%s: %s); using the versions loaded before",
                            type(exc).__name__, str(exc)[:200])
            self._checked = now
        return self._active

    def _load(self) -> dict[str, Active]:
        with self.engine.connect() as conn:
            versions = {t: (v, c, s) for t, v, c, s in conn.execute(text(
                "SELECT task_type, version, cheap_tier, strong_tier FROM routers WHERE active")).all()}
            loaded: dict[str, Active] = {}
            for task, (version, cheap, strong) in versions.items():
                known = self._active.get(task)
                if known is not None and known.version == version:
                    loaded[task] = known
                elif (task, version) not in self._unusable:
                    active = self._version(conn, task, version, cheap, strong)
                    if active is not None:
                        loaded[task] = active
        return loaded

    def _version(self, conn: Connection, task: str, version: int, cheap: str, strong: str) -> Active | None:
        """One active version, or None (warned once) when this worker cannot use it: one version that
        cannot be used leaves the other task types' routers in use."""
        order = self.config.tier_names
        if cheap not in order or strong not in order or order.index(strong) <= order.index(cheap):
            self._unusable.add((task, version))
            log.warning("router %s v%d routes from tier %s up to %s, which this configuration does not have "
                        "in that order; it is not used", task, version, cheap, strong)
            return None
        spec, policy, prompt, answer = conn.execute(text(
            "SELECT spec, policy, prompt_scorer, answer_scorer FROM routers WHERE task_type = :task "
            "AND version = :version"), {"task": task, "version": version}).one()
        try:
            router = Router.from_blobs(spec, policy, bytes(prompt), bytes(answer) if answer else None)
        except Exception as exc:  # from_blobs only decodes bytes and JSON (no I/O), so whatever
            # it raises (np.load, the layout, the policy) means a version stored by another tierq, or damaged
            self._unusable.add((task, version))
            log.warning("router %s v%d cannot be read by this worker (%s: %s); jobs of task type %s are routed "
                        "by the rules alone until `tierq route activate --task-type %s --version N` names a "
                        "version it can read (or `tierq route off --task-type %s`)", task, version,
                        type(exc).__name__, str(exc)[:200], task, task, task)
            return None
        log.info("using learned router %s v%d", task, version)
        return Active(version, cheap, strong, router)

    def get(self, task_type: str, look: bool = True) -> Active | None:
        """The active router of `task_type`, if the configuration lets routers decide (`look`: first look
        for a new version if `poll_s` has passed; never on an event loop)."""
        if not self.config.router.enabled:
            return None
        return (self._refresh() if look else self._active).get(task_type)

    def start_tier(self, task_type: str, messages: list[dict[str, Any]], tier: str, forced: bool,
                   maximum: str | None) -> tuple[str, str] | None:
        """Decision (a): (strong tier, reason) when the router sends this prompt past the cheap tier."""
        active = self.get(task_type)
        if active is None or forced or tier != active.cheap_tier:
            return None
        if maximum is not None and self.config.tier_index(active.strong_tier) > self.config.tier_index(maximum):
            return None
        if not active.router.start_strong(user_text(messages)):
            return None
        return active.strong_tier, f"learned router v{active.version}"

    def second_look(self, task_type: str, tier: str, messages: list[dict[str, Any]]) -> SecondLook | None:
        """Decision (b) for answers given at `tier`: a function of (answer, log-probabilities) that says
        why the answer goes on to the strong tier, or None; None when no router judges this tier's answers."""
        active = self.get(task_type, look=False)  # called on the event loop: the task refreshed before it
        if active is None or tier != active.cheap_tier or active.router.policy.escalate_below is None:
            return None
        prompt = user_text(messages)

        def judge(answer: str, logprobs: LogprobSummary | None) -> Doubt | None:
            if active.router.escalate(prompt, answer, True, logprobs):
                return Doubt(f"{ROUTER_REASON} learned router v{active.version} scored the answer below its "
                             f"threshold; sent on to {active.strong_tier}", active.strong_tier)
            return None

        return judge
