"""Identifiers that make two similar texts different questions: numbers, amounts, dates, e-mails, URLs,
and negation.

Dates count in words too: weekday and month names ("closed on Friday" is not "closed on Monday").
"May" and "March" are left out, since as words they are mostly a modal verb and a verb.

Negation: whether the text says "not", "no", "never", "without", "n't", "losing", "non-" and the like an
odd number of times ("it works" is not "it does not work", "important" is not "losing importance", "a
virtual card" is not "a non-virtual card"), with contractions also as typed without an apostrophe or with
another one ("doesnt", "don’t").

Two tickets that differ only in an order number ask about different orders, however close their
embeddings are, so a semantic hit needs the same identifiers on both sides.

Content words (`content_words`, `added`): a text that says more than the other, past a small budget, asks
something else ("Shares rose" / "Shares rose after the company cut 500 jobs and closed two plants"), however
close the two vectors are.
"""

from __future__ import annotations

import hashlib
import re
import struct
import unicodedata
from collections.abc import Callable

from tierq.cache.places import places

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
                        "nowhere", "lose", "losing", "lost", "stop", "stopped", "fail", "failed", "unable",
                        "unsuccessful", "unsuccessfully",
                        # "non-physical", "non virtual": the prefix written apart or hyphenated
                        "non"})
# Contractions typed without their apostrophe, as quick messages often are ("didnt", "doesnt").
_BARE_CONTRACTIONS = frozenset({"dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent", "hasnt", "havent",
                                "hadnt", "cant", "couldnt", "wont", "wouldnt", "shouldnt", "mustnt", "neednt",
                                "aint"})
# Apostrophes other than ' that keyboards and word processors write ("don’t", "didn`t").
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'", "\u02bc": "'"})


def negated(text: str) -> bool:
    """Whether `text` negates an odd number of times ("not", "n't", "no", "without", "losing"...)."""
    words: list[str] = re.findall(r"[a-z']+", text.lower().translate(_APOSTROPHES))
    count = sum(w in _NEGATIONS or w in _BARE_CONTRACTIONS or w.endswith("n't") for w in words)
    return count % 2 == 1


def _place_patterns() -> tuple[re.Pattern[str], re.Pattern[str], dict[str, str]]:
    """A case-sensitive pattern for the places written in capitals, a case-insensitive one for the rest
    (longest names first), and each name's place."""
    table = places()
    canonical = {name.lower(): place for name, place in table}
    capitals = sorted({n for n, _ in table if n.replace(".", "").isupper()}, key=len, reverse=True)
    words = sorted({n for n, _ in table if not n.replace(".", "").isupper()}, key=len, reverse=True)
    def alternation(names: list[str]) -> str:
        return r"(?<![\w.])(?:" + "|".join(re.escape(n) for n in names) + r")(?![\w])"
    return re.compile(alternation(capitals)), re.compile(alternation(words), re.IGNORECASE), canonical


_CAPITAL_PLACES, _PLACE_WORDS, _PLACE_OF = _place_patterns()
# Other acronyms: two to six capitals, or capitals with dots ("NASA", "I.B.M.").
_ACRONYM = re.compile(r"(?<![\w.])(?:[A-Z]{2,6}|(?:[A-Z]\.){2,6})(?![\w])")


def names(text: str) -> frozenset[str]:
    """Places (countries, regions, major cities: tierq.cache.places), acronyms and proper names
    (`proper_names`) named in `text`, and the kind of answer it asks for (`asks`).

    A text mostly in capitals is shouting, not naming: only its places count then.
    """
    places = list(_PLACE_WORDS.finditer(text))
    found = {_PLACE_OF[m.group(0).lower()] for m in places}
    letters = [c for c in text if c.isalpha()]
    shouting = len(letters) >= 8 and sum(c.isupper() for c in letters) > len(letters) / 2
    kind = asks(text)
    proper: frozenset[str] = frozenset()
    if not shouting:
        capitals = list(_CAPITAL_PLACES.finditer(text))
        found |= {_PLACE_OF[m.group(0).lower()] for m in capitals}
        rest = _blank(text, capitals)
        found |= {m.group(0).replace(".", "") for m in _ACRONYM.finditer(rest)}
        proper = proper_names(_blank(rest, places))  # places are compared as places
    # As many as the stored field holds compactly (a Redis listpack value: 64 bytes at most): the kind
    # asked for, places and acronyms, then proper names; the rest is left out, the lenient way.
    kept: list[str] = []
    size = -1
    for name in ([kind] if kind is not None else []) + sorted(found) + sorted(proper):
        size += len(name.encode()) + 1
        if size > NAMES_BYTES:
            break
        kept.append(name)
    return frozenset(kept)


def _blank(text: str, matches: list[re.Match[str]]) -> str:
    """`text` with the matched spans turned into spaces, but for a full stop that ends one ("U.S."), which
    may end a sentence too (every other offset stays where it was)."""
    for m in matches:
        end = m.end() - 1 if m.group(0).endswith(".") else m.end()
        text = text[: m.start()] + " " * (end - m.start()) + text[end:]
    return text


PROPER = "~"  # marks a proper name among the names
ASKS = "?"  # marks the kind of answer asked for
NAME_SEPARATOR = "\x1f"  # between the names an entry keeps (field nm)
NAMES_BYTES = 64  # the most the names field holds
_TOKEN = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*|[.!?:;\"“”\n]")
_SENTENCE_END = frozenset('.!?:;"“”\n')
# Abbreviations whose full stop ends no sentence ("Calvin Hollins Jr. said"); so does an initial ("Colin L.
# Powell", "U.S.").
_ABBREVIATIONS = frozenset({"jr", "sr", "st", "mr", "mrs", "ms", "dr", "prof", "gen", "sen", "rep", "gov", "lt", "col",
                            "capt", "sgt", "mt", "ft", "inc", "co", "corp", "ltd", "vs"})


def proper_names(text: str) -> frozenset[str]:
    """People, organisations and products a text names: its capitalised words that do not start a sentence
    or a quote ("Obama", "Samsung"), as PROPER + their stem. None in a text where most words are
    capitalised (a headline in title case) or shouted; words all in capitals are acronyms (`names`)."""
    tokens = _TOKEN.findall(text)
    words = [t for t in tokens if t not in _SENTENCE_END]
    if len(words) >= 4 and sum(w[0].isupper() for w in words) > 0.6 * len(words):
        return frozenset()
    found = set()
    start, previous = True, ""
    for token in tokens:
        if token in _SENTENCE_END:
            start = not (token == "." and (len(previous) == 1 and previous.isupper()
                                            or previous.lower() in _ABBREVIATIONS))
            continue
        base = re.split(r"['’]", token)[0]
        if not start and base[:1].isupper() and not base.isupper() and len(base) >= 2:
            found.add(PROPER + _stem(unicodedata.normalize("NFKC", base).lower()))
        start, previous = False, base
    return frozenset(found)


_QUESTION_WORD = re.compile(r"\b(what|which|why|how|when|where|who|whom|whose)\b"
                            r"(?:\s+(much|many|long|often|far|old|big|soon|fast)\b)?", re.IGNORECASE)


def asks(text: str) -> str | None:
    """The kind of answer `text` asks for, by its first question word: a reason ("?why"), an amount ("?how-
    much": how much, many, long, often...) or anything else ("?other": what, how, when, where, who); None
    without a question word. Kept with the names, so "Why do you need to peel peaches?" does not get the
    answer to "How to peel peaches?", nor "Why do you need to verify my identity?" that to "What do you
    need to ...". What, how, when and where are one kind: support messages swap them freely ("When will my
    card arrive?", "Where is my card?")."""
    found = _QUESTION_WORD.search(text)
    if found is None:
        return None
    word = found.group(1).lower()
    if word == "why":
        return "?why"
    return "?how-much" if word == "how" and found.group(2) else "?other"


def substituted(a: frozenset[str], b: frozenset[str], a_says: Callable[[str], bool] | None = None,
                b_says: Callable[[str], bool] | None = None) -> bool:
    """Whether each side names something the other does not: "the capital of France" / "... of Italy", "what
    did Obama say" / "what did Trump say", but not "Moffitt said" / "Professor Moffitt said" (a name added
    is often a paraphrase; one replaced never is). A proper name (`proper_names`) is matched by another
    that begins alike ("Tim" / "Timothy", "Chinese" / "China") or, through `a_says` / `b_says` (whether
    that side's text has the word, by its stem), by the same word written small ("President" /
    "president"). The kind of answer asked for (`asks`) counts only against the other's kind."""
    a_kind, b_kind = {n for n in a if n.startswith(ASKS)}, {n for n in b if n.startswith(ASKS)}
    if a_kind and b_kind and a_kind != b_kind:
        return True
    a, b = a - a_kind, b - b_kind
    return bool(_unmatched(a, b, b_says)) and bool(_unmatched(b, a, a_says))


def _unmatched(names_: frozenset[str], other: frozenset[str], says: Callable[[str], bool] | None) -> list[str]:
    """The names of one side that the other side's names (and, for proper names, its words) do not match."""
    left = []
    for name in names_ - other:
        if name.startswith(PROPER):
            stem = name[1:]
            if any(_alike(stem, o[1:] if o.startswith(PROPER) else o.lower()) for o in other):
                continue
            if says is not None and says(stem):
                continue
        elif any(o.startswith(PROPER) and _alike(o[1:], name.lower()) for o in other):
            continue
        left.append(name)
    return left


def _alike(a: str, b: str) -> bool:
    """Two names that begin alike: one starts the other ("tim", "timothy"), or their first four letters agree
    ("chines", "china")."""
    return (len(a) >= 3 and b.startswith(a)) or (len(b) >= 3 and a.startswith(b)) or (len(a) >= 4 and a[:4] == b[:4])


def _day_or_month(word: str) -> str:
    """A weekday or month by its first three letters: "Sept" is "September", "Thurday" is "Thursday"."""
    return word[:3].lower()


def fingerprint(text: str) -> str:
    """A short digest of the identifiers, stored with a cache entry and compared on lookup."""
    ids = sorted(identifiers(text))
    return hashlib.blake2b("\x1f".join(ids).encode(), digest_size=8).hexdigest() if ids else ""


# Words with no content of their own: articles, pronouns, auxiliaries, prepositions, conjunctions and the
# like. Negations (`_NEGATIONS`) and question words are left out too: they have guards of their own.
_FUNCTION_TEXT = """
    a an the and or but if then than so as of to in on at by for with from into onto over under about above
    below after before between through during against among around off out up down again further once here
    there all any both each few more most other some such only own same too very just also even still yet
    is are was were be been being am do does did doing done have has had having get gets got getting
    can could would should will shall may might must ought i me my mine myself we us our ours ourselves you
    your yours yourself yourselves he him his himself she her hers herself it its itself they them their
    theirs themselves this that these those what which who whom whose why how when where whether not no nor
    never said says say saying please thanks thank hello hi hey ok okay one ones something anything thing
    things way now much many lot lots really quite
"""
_NOT_CONTENT = frozenset(_FUNCTION_TEXT.split()) | _NEGATIONS | _BARE_CONTRACTIONS
# Words are what lies between spaces, dashes and slashes, with the punctuation at their ends cut: that
# keeps the combining marks of scripts such as Devanagari inside their words. A script written without
# spaces (Chinese, Japanese) gives whole runs, which the guard then compares as single words.
_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015/\\|_]+")
_CONSONANTS = frozenset("bcdfgklmnprstvz")
# An entry keeps at most this many of its words' 16-bit hashes (the smallest), two bytes each after a
# two-byte count: 62 bytes, under Redis's 64-byte limit for a hash field stored compactly (listpack).
SKETCH_WORDS = 30


def _stem(word: str) -> str:
    """A word without its plural, -ing or -ed ending, a doubled last consonant or a final e, so that the
    forms of one word compare equal ("charge", "charges", "charged", "charging"; "cancel", "cancelled";
    "pass", "passes"); roughly, since only equality between two texts matters."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    for suffix in ("ing", "ed", "es", "s"):
        if not word.endswith(suffix) or len(word) - len(suffix) < 3:
            continue
        if (suffix == "ed" and word[-3] == "e") or (suffix == "s" and word[-2] in "siu"):
            break  # "speed", "need"; "pass", "basis", "status": no ending to cut
        word = word[: -len(suffix)]
        break
    if len(word) > 3 and word[-1] == word[-2] and word[-1] in _CONSONANTS:
        word = word[:-1]
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def _trimmed(token: str) -> str:
    """`token` without the punctuation and symbols at its ends."""
    start, end = 0, len(token)
    while start < end and unicodedata.category(token[start])[0] in "PS":
        start += 1
    while end > start and unicodedata.category(token[end - 1])[0] in "PS":
        end -= 1
    return token[start:end]


def content_words(text: str) -> frozenset[str]:
    """The words of `text` that say something (three characters or more, no digit, no function word), each
    stemmed."""
    plain = unicodedata.normalize("NFKC", text).lower().translate(_APOSTROPHES).replace("n't", " ").replace("'", " ")
    words = (_trimmed(token) for token in _SEPARATORS.split(plain))
    return frozenset(_stem(w) for w in words
                     if len(w) >= 3 and w not in _NOT_CONTENT and not any(c.isdigit() for c in w))


def word_hash(word: str) -> int:
    """A word as a 16-bit hash: what keys and entries keep (two words of one text rarely share one, and if
    they do the guards only get more lenient)."""
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=2).digest(), "big")


def word_hashes(words: frozenset[str]) -> frozenset[int]:
    """Each word as its `word_hash`."""
    return frozenset(word_hash(w) for w in words)


def added(a: frozenset[int] | frozenset[str], b: frozenset[int] | frozenset[str], budget: int, share: float) -> bool:
    """Whether one side has more content words the other lacks than allowed: `budget`, or `share` of the
    longer side's content words where that is more (a long text is paraphrased in more words)."""
    allowed = max(budget, int(share * max(len(a), len(b))))
    return len(a - b) > allowed or len(b - a) > allowed


def word_sketch(hashes: frozenset[int]) -> bytes:
    """What an entry keeps of its words: their number, and their `SKETCH_WORDS` smallest hashes."""
    kept = sorted(hashes)[:SKETCH_WORDS]
    return struct.pack(f">{1 + len(kept)}H", min(len(hashes), 0xFFFF), *kept)


def added_to_sketch(query: frozenset[int], sketch: bytes | None, budget: int, share: float) -> bool:
    """`added` between a query's word hashes and an entry's sketch (False when the entry has none, as one
    written before words were kept). An entry with more words than its sketch holds is compared on a
    sample: its kept hashes are all of its hashes up to the largest kept, the query's hashes up to there
    are a sample of the query's at the same rate, and the differences found are scaled up by that rate."""
    unpacked = _unpacked(sketch)
    if unpacked is None:
        return False
    count, kept = unpacked
    if count <= len(kept):
        return added(query, frozenset(kept), budget, share)
    top, rate = kept[-1], len(kept) / count
    sampled, entry = frozenset(h for h in query if h <= top), frozenset(kept)
    allowed = max(budget, int(share * max(len(query), count)))
    return len(sampled - entry) / rate > allowed or len(entry - sampled) / rate > allowed


def sketch_says(sketch: bytes | None) -> Callable[[str], bool]:
    """Whether an entry's text has a word (by its stem), as far as its sketch tells: a word whose hash lies
    beyond the sketch's sample, or an entry without a sketch, counts as said (the lenient answer)."""
    unpacked = _unpacked(sketch)
    if unpacked is None:
        return lambda stem: True
    count, kept = unpacked
    hashes, top = frozenset(kept), (kept[-1] if kept and count > len(kept) else 0xFFFF)
    return lambda stem: (h := word_hash(stem)) in hashes or h > top


def _unpacked(sketch: bytes | None) -> tuple[int, list[int]] | None:
    """A sketch's word count and kept hashes, or None for no sketch (or one not of this form)."""
    if sketch is None or len(sketch) < 2 or len(sketch) % 2:
        return None
    count, *kept = struct.unpack(f">{len(sketch) // 2}H", sketch)
    return int(count), [int(h) for h in kept]
