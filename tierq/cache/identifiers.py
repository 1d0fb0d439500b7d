"""Identifiers that make two similar texts different questions: numbers, amounts, dates, e-mails, URLs,
and negation.

Dates count in words too: weekday and month names ("closed on Friday" is not "closed on Monday").
"May" and "March" are left out, since as words they are mostly a modal verb and a verb.

Negation: whether the text says "not", "no", "never", "without", "n't", "losing" and the like an odd
number of times ("it works" is not "it does not work", "important" is not "losing importance").

Two tickets that differ only in an order number ask about different orders, however close their
embeddings are, so a semantic hit needs the same identifiers on both sides.
"""

from __future__ import annotations

import hashlib
import re

_URL = re.compile(r"\bhttps?://[^\s<>\"')\]]+", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
# Digit runs, with their separators, so "1,250.00", "2024-05-01", "#48213" and "v2" all count.
_NUMBER = re.compile(r"\d+(?:[.,:/-]\d+)*")
_DAY_OR_MONTH = re.compile(
    r"\b(?:mon|tues?|wednes|thurs?|fri|satur|sun)day\b"
    r"|\b(?:jan(?:uary)?|feb(?:ruary)?|apr(?:il)?|june?|july?|aug(?:ust)?|sept?(?:ember)?|oct(?:ober)?"
    r"|nov(?:ember)?|dec(?:ember)?)\b",
    re.IGNORECASE,
)


def identifiers(text: str) -> frozenset[str]:
    """The identifiers in `text`, normalised (URLs and e-mails lower-cased, numbers as written)."""
    found: set[str] = set()
    rest = text
    for pattern in (_URL, _EMAIL):
        found.update(m.group(0).lower().rstrip(".,;:") for m in pattern.finditer(rest))
        rest = pattern.sub(" ", rest)
    found.update(m.group(0).rstrip(".,:/-") for m in _NUMBER.finditer(rest))
    found.update(_day_or_month(m.group(0)) for m in _DAY_OR_MONTH.finditer(rest))
    if negated(rest):
        found.add("not")
    return frozenset(found)


_NEGATIONS = frozenset({"not", "no", "never", "without", "cannot", "none", "nobody", "nothing", "neither", "nor",
                        "nowhere", "lose", "losing", "lost", "stop", "stopped", "fail", "failed", "unable"})


def negated(text: str) -> bool:
    """Whether `text` negates an odd number of times ("not", "n't", "no", "without", "losing"...)."""
    words: list[str] = re.findall(r"[a-z']+", text.lower())
    count = sum(w in _NEGATIONS or w.endswith("n't") for w in words)
    return count % 2 == 1


def _day_or_month(word: str) -> str:
    """A weekday or month by its first three letters: "Sept" is "September", "Thurday" is "Thursday"."""
    return word[:3].lower()


def fingerprint(text: str) -> str:
    """A short digest of the identifiers, stored with a cache entry and compared on lookup."""
    ids = sorted(identifiers(text))
    return hashlib.blake2b("\x1f".join(ids).encode(), digest_size=8).hexdigest() if ids else ""
