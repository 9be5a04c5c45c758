"""Rendered arithmetic, checked from the pixels alone: OCR reads the image; the expression it read
is parsed (× x * as times, ÷ / as division, the minus signs alike) and evaluated exactly with
Python's ast over Fractions; "A: 3.75 B: 3.8" is compared as Decimals; cards are summed."""

from __future__ import annotations

import ast
import operator
import re
from decimal import Decimal
from fractions import Fraction

from synthesis.reasoning.checks import ocr
from synthesis.reasoning.task import Task, decode_rgb

_SYMBOLS = str.maketrans(
    {"×": "*", "x": "*", "X": "*", "÷": "/", "−": "-", "–": "-", "—": "-", "一": "-", "＋": "+", "＝": "="}
)
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def evaluate(text: str) -> Fraction:
    """The value of an expression of whole numbers and + - * / (ValueError for anything else)."""

    def walk(node):
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        raise ValueError(f"not plain arithmetic: {ast.dump(node)}")

    return walk(ast.parse(text, mode="eval").body)


def check(task: Task) -> tuple[bool, str]:
    rgb = decode_rgb(task.images[0])
    text, score = ocr.read(ocr.pad(rgb, 16))
    form = task.meta["ask"]["form"]
    try:
        if form == "expression":
            expression = text.translate(_SYMBOLS).split("=")[0].replace(" ", "")
            value = evaluate(expression)
            expected = str(value.numerator) if value.denominator == 1 else str(value)
            how = f"RapidOCR read {text!r} ({score:.2f}); evaluated {expression} = {expected}"
        elif form == "compare":
            found = dict(re.findall(r"([AB])\s*[:：]?\s*(\d+\.\d+)", text))
            a, b = Decimal(found["A"]), Decimal(found["B"])
            expected = "A" if a > b else "B" if b > a else "equal"
            how = f"RapidOCR read {text!r} ({score:.2f}); A = {a}, B = {b}"
        else:
            numbers = [int(n) for n in re.findall(r"\d+", text)]
            expected = str(sum(numbers))
            how = f"RapidOCR read {text!r} ({score:.2f}); sum of {numbers} = {expected}"
    except (ValueError, KeyError, SyntaxError, ZeroDivisionError) as exc:
        return False, f"RapidOCR read {text!r}, which does not parse: {exc}"
    return expected == task.answer, f"{how}; answer {task.answer!r}"
