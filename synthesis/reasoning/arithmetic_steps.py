"""Written-arithmetic reasoning: column addition with carries, column subtraction with borrows,
multiplication by place value, division by the matching product — each as the steps a person
writes, plus the slip a person typically makes (a dropped carry or borrow, a lost zero)."""

from __future__ import annotations

PLACES = {"en": ["ones", "tens", "hundreds", "thousands"], "zh": ["个位", "十位", "百位", "千位"]}


def addition(a: int, b: int, lang: str, slip: bool = False) -> tuple[list[str], int]:
    """Column addition of non-negative a + b: (steps, result); with slip the first carry is dropped."""
    steps, carry, digits, dropped = [], 0, [], False
    width = max(len(str(a)), len(str(b)))
    for place in range(width):
        da, db = a // 10**place % 10, b // 10**place % 10
        total = da + db + carry
        name = PLACES[lang][place]
        plus = f" + {carry}" if carry else ""
        if total >= 10 and slip and not dropped:
            steps.append(
                f"{name}：{da} + {db}{plus} = {total}，写{total % 10}。"
                if lang == "zh"
                else f"{name.capitalize()}: {da} + {db}{plus} = {total}, write {total % 10}."
            )
            carry, dropped = 0, True
        else:
            carry_text = ("，进1" if lang == "zh" else " carry 1") if total >= 10 else ""
            steps.append(
                f"{name}：{da} + {db}{plus} = {total}，写{total % 10}{carry_text}。"
                if lang == "zh"
                else f"{name.capitalize()}: {da} + {db}{plus} = {total}, write {total % 10}{carry_text}."
            )
            carry = total // 10
        digits.append(total % 10)
    if carry:
        digits.append(carry)
    result = int("".join(str(d) for d in reversed(digits)))
    return steps, result


def subtraction(a: int, b: int, lang: str, slip: bool = False) -> tuple[list[str], int]:
    """Column subtraction a - b (a >= b >= 0); with slip the first borrow is not paid back."""
    steps, borrow, digits, forgot = [], 0, [], False
    for place in range(len(str(a))):
        da, db = a // 10**place % 10, b // 10**place % 10
        name = PLACES[lang][place]
        if slip and borrow and not forgot:  # forgets that this place lent 1 to the one before
            borrow, forgot = 0, True
        top = da - borrow
        owed = f"{da} - 1" if borrow else str(da)
        if top < db:
            steps.append(
                f"{name}：{owed}不够减{db}，借1：{top + 10} - {db} = {top + 10 - db}。"
                if lang == "zh"
                else f"{name.capitalize()}: {owed} is less than {db}, borrow 1: {top + 10} - {db} = {top + 10 - db}."
            )
            digits.append(top + 10 - db)
            borrow = 1
        else:
            steps.append(
                f"{name}：{owed} - {db} = {top - db}。"
                if lang == "zh"
                else f"{name.capitalize()}: {owed} - {db} = {top - db}."
            )
            digits.append(top - db)
            borrow = 0
    return steps, int("".join(str(d) for d in reversed(digits)))


def multiplication(a: int, b: int, lang: str, slip: bool = False) -> tuple[list[str], int]:
    """a x b by splitting a into its tens and ones; with slip the tens' zero is lost."""
    tens, ones = a - a % 10, a % 10
    p1, p2 = tens * b, ones * b
    if slip:
        p1 = p1 // 10
    total = p1 + p2
    return (
        [
            f"把{a}拆成{tens} + {ones}：{tens} × {b} = {p1}，{ones} × {b} = {p2}。"
            if lang == "zh"
            else f"Split {a} into {tens} + {ones}: {tens} × {b} = {p1} and {ones} × {b} = {p2}.",
            f"相加：{p1} + {p2} = {total}。" if lang == "zh" else f"Add them: {p1} + {p2} = {total}.",
        ],
        total,
    )


def division(a: int, b: int, lang: str, slip: bool = False) -> tuple[list[str], int]:
    """a / b (exact) by the matching product; with slip the quotient is one too large."""
    q = a // b + (1 if slip else 0)
    step = f"{b}乘几等于{a}？{b} × {q} = {a}。" if lang == "zh" else f"What times {b} gives {a}? {b} × {q} = {a}."
    return [step], q


def worked(a: int, op: str, b: int, lang: str, slip: bool = False) -> tuple[list[str], int]:
    return {"+": addition, "−": subtraction, "×": multiplication, "÷": division}[op](a, b, lang, slip)
