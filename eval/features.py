"""Features for the learned policies: of the prompt alone, and of the prompt with the cheap model's answer.

None of them looks at a label. The answer features check the working the way a reader would: is there
a final number, do the arithmetic steps hold, does the final number come out of the working, are the
question's numbers used.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

NUM = r"\$?\d[\d,]*(?:\.\d+)?%?"
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_FINAL = re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)")
_EQUATION = re.compile(rf"({NUM}(?:\s*[-+*/x×÷]\s*{NUM})+)\s*=\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)")
_CALC = re.compile(r"<<([^=<>]+)=([^<>]+)>>")
_HEDGES = ("approximately", "assume", "assuming", "not possible", "cannot", "can't", "unclear", "however",
           "not enough information", "i'm not sure", "estimate")
_HARD_WORDS = ("percent", "%", "fraction", "ratio", "average", "twice", "half", "times", "rate", "per ")
_OPS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
}

Vector = npt.NDArray[np.float64]


def number(text: str) -> float | None:
    """A number as written ("1,250", "$3.5", "60%"), or None."""
    cleaned = text.replace(",", "").replace("$", "").strip()
    scale = 0.01 if cleaned.endswith("%") else 1.0
    try:
        return float(cleaned.rstrip("%")) * scale
    except ValueError:
        return None


def arithmetic(expression: str) -> float | None:
    """The value of a plain arithmetic expression (numbers, + - * / and brackets), or None."""
    text = re.sub(r"(\d[\d.]*)%", r"(\1/100)", expression.replace(",", "").replace("$", ""))
    text = text.replace("x", "*").replace("×", "*").replace("÷", "/")
    try:
        tree = ast.parse(text.strip(), mode="eval")
        return _value(tree.body)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, RecursionError):
        return None


def _value(node: ast.expr) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_value(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_value(node.left), _value(node.right))
    raise ValueError("not plain arithmetic")


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= max(0.01, 1e-6 * abs(b))


def equations(answer: str) -> tuple[int, int]:
    """How many arithmetic steps the answer states, and how many of them are wrong."""
    checked = wrong = 0
    steps = [(m.group(1), m.group(2)) for m in _CALC.finditer(answer)]
    steps += [(m.group(1), m.group(2)) for m in _EQUATION.finditer(_CALC.sub(" ", answer))]
    for left, right in steps:
        value, stated = arithmetic(left), number(right)
        if value is None or stated is None:
            continue
        checked += 1
        wrong += not _close(value, stated)
    return checked, wrong


def _numbers(text: str) -> list[float]:
    found = (number(m.group(0)) for m in _NUMBER.finditer(text))
    return [n for n in found if n is not None]


def prompt_features(prompt: str) -> list[float]:
    """What a router sees before any call: the question's size, its numbers and its wording."""
    folded = prompt.casefold()
    numbers = _numbers(prompt)
    return [
        math.log1p(len(prompt)),
        float(len(numbers)),
        float(sum(1 for n in numbers if n != int(n))),
        float(sum(word in folded for word in _HARD_WORDS)),
        float(prompt.count(". ") + prompt.count("? ")),
        math.log1p(max(numbers, default=0.0)),
    ]


def answer_features(prompt: str, answer: str) -> list[float]:
    """What a scorer sees after the cheap call: the prompt's features and checks of the answer's working."""
    final_match = _FINAL.search(answer)
    final = number(final_match.group(1)) if final_match else None
    body = answer[: final_match.start()] if final_match else answer
    body_numbers = _numbers(body)
    checked, wrong = equations(answer)
    prompt_numbers = set(_numbers(prompt))
    used = sum(1 for n in prompt_numbers if any(_close(n, b) for b in body_numbers))
    last_result = body_numbers[-1] if body_numbers else None
    folded = answer.casefold()
    return [
        *prompt_features(prompt),
        float(final is not None),
        float(final is not None and final == int(final)),
        float(final is not None and any(_close(final, b) for b in body_numbers)),
        float(final is not None and last_result is not None and _close(final, last_result)),
        math.log1p(checked),
        float(wrong > 0),
        wrong / checked if checked else 0.0,
        math.log1p(len(answer)),
        math.log1p(answer.count("\n")),
        used / len(prompt_numbers) if prompt_numbers else 1.0,
        float(sum(h in folded for h in _HEDGES)),
        math.log1p(len(body_numbers)),
        math.log10(abs(final) + 1) if final is not None else 0.0,
    ]


def matrix(rows: list[list[float]]) -> Vector:
    """Feature rows as a float matrix."""
    return np.asarray(rows, dtype=np.float64)
