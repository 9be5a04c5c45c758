"""Arithmetic and comparisons on rendered numbers: an expression to evaluate (two or three numbers,
with + − × ÷ and the usual precedence), two decimals to compare (a choice), or number cards to add.

The reasoning works it out as written arithmetic (carries, borrows, place value, precedence); the
typical mistakes are a dropped carry or borrow, a lost zero, left-to-right evaluation, comparing
decimals by their digits as whole numbers, or a skipped card. The agentic code is a calculator:
it prints the exact result of what the image shows.
"""

from __future__ import annotations

from PIL import Image, ImageDraw

from synthesis.reasoning import arithmetic_steps, drawing, lettering
from synthesis.reasoning.task import Task, encode_png, task_rng

KIND = "arithmetic"
PY = {"+": "+", "−": "-", "×": "*", "÷": "//"}


def operands(rng, op: str) -> tuple[int, int]:
    if op == "+":
        return rng.randint(12, 989), rng.randint(12, 989)
    if op == "−":
        a, b = rng.randint(30, 999), rng.randint(11, 400)
        return (a, b) if a > b else (b + a, a)
    if op == "×":
        return rng.randint(12, 99), rng.randint(3, 9)
    b, q = rng.randint(3, 19), rng.randint(3, 19)
    return b * q, b


def canvas(rng, w: int, h: int) -> Image.Image:
    return Image.new("RGB", (w, h), tuple(rng.randint(236, 252) for _ in range(3)))


def draw_line(rng, image: Image.Image, text: str, size: int) -> list[str]:
    """`text` centred on the image in a covering font; returns [font name, text]."""
    face = lettering.pick(rng, text)
    font = lettering.load(face, size)
    while font.getlength(text) > image.width - 40:
        size -= 2
        font = lettering.load(face, size)
    left, top, right, bottom = drawing.text_size(font, text)
    x = (image.width - (right - left)) // 2 - left + rng.randint(-10, 10)
    y = (image.height - (bottom - top)) // 2 - top + rng.randint(-8, 8)
    ImageDraw.Draw(image).text((x, y), text, font=font, fill=tuple(rng.randint(0, 60) for _ in range(3)))
    return [face.name, text]


def generate(seed: int, lang: str) -> Task:
    rng = task_rng(KIND, seed, lang)
    form = rng.choice(["expr2", "expr2", "expr3", "compare", "cards"])
    return {"expr2": expression2, "expr3": expression3, "compare": compare, "cards": cards}[form](seed, lang, rng)


def finish(
    seed,
    lang,
    rng,
    image,
    question,
    answer,
    kind,
    steps,
    wrong,
    wrong_steps,
    code,
    expect,
    before,
    simple,
    analysis,
    ask,
    drawn,
    choices=None,
) -> Task:
    zh = lang == "zh"
    after = [
        f"代码算出的结果是{answer}。" if zh else f"The code gives {answer}.",
        f"所以答案是{answer}。" if zh else f"So the answer is {answer}.",
    ]
    return Task(
        kind=KIND,
        seed=seed,
        lang=lang,
        images=[encode_png(image)],
        question=question,
        answer=str(answer),
        answer_kind=kind,
        steps=steps,
        agentic_code=code,
        task_type="reasoning~math~rendered_arithmetic",
        agentic_before=before,
        agentic_after=after,
        agentic_expect=expect,
        distractor=str(wrong),
        wrong_steps=wrong_steps,
        simple=simple,
        analysis=analysis,
        choices=choices,
        meta={"ask": ask, "lettering": drawn, "size": [image.width, image.height]},
    )


def expression2(seed, lang, rng) -> Task:
    zh = lang == "zh"
    op = rng.choice(["+", "−", "×", "÷"])
    a, b = operands(rng, op)
    shown = f"{a} {op} {b}"
    image = canvas(rng, 448, rng.choice([140, 168, 196]))
    drawn = draw_line(rng, image, f"{shown} = ?", rng.randint(36, 46))
    work, answer = arithmetic_steps.worked(a, op, b, lang)
    slip_work, wrong = arithmetic_steps.worked(a, op, b, lang, slip=True)
    if wrong == answer:  # no carry or borrow to drop: misread the last digit of b instead
        b2 = b + 1 if b % 10 != 9 else b - 1
        slip_work, wrong = arithmetic_steps.worked(a, op, b2, lang)
        slip_work = [f"图中的算式是{a} {op} {b2}。" if zh else f"The image shows {a} {op} {b2}.", *slip_work]
    head = f"图中的算式是{shown}。" if zh else f"The image shows the expression {shown}."
    question = rng.choice(
        ["图中算式的结果是多少？", "计算图中的算式。"]
        if zh
        else ["What is the value of the expression in the image?", "Work out the expression shown in the image."]
    )
    final = f"所以{shown} = {answer}。" if zh else f"So {shown} = {answer}."
    steps = [head, *work, final]
    wrong_steps = [
        *(slip_work if slip_work[0].startswith(("图中", "The image")) else [head, *slip_work]),
        f"所以{shown} = {wrong}。" if zh else f"So {shown} = {wrong}.",
    ]
    code = f'a, b = {a}, {b}  # the numbers in the image\nprint("{a} {PY[op]} {b} =", a {PY[op]} b)\n'
    before = [head, "我用代码算一下。" if zh else "I will compute it with code."]
    simple = op in ("+", "−") and a < 100 and b < 100
    analysis = (
        ("这是一个简单的两位数运算" if zh else "This is a simple two-digit sum")
        if simple
        else (f"{shown}需要笔算" if zh else f"{shown} needs written working")
    )
    return finish(
        seed,
        lang,
        rng,
        image,
        question,
        answer,
        "number",
        steps,
        wrong,
        wrong_steps,
        code,
        f"{a} {PY[op]} {b} = {answer}",
        before,
        simple,
        analysis,
        {"form": "expression"},
        [drawn],
    )


def expression3(seed, lang, rng) -> Task:
    zh = lang == "zh"
    # one product and one sum or difference, in either order: precedence matters
    a, b, c = rng.randint(2, 30), rng.randint(2, 12), rng.randint(2, 12)
    first, second = rng.choice([("+", "×"), ("−", "×"), ("×", "+"), ("×", "−")])
    if first == "×":
        product = a * b
        answer = product + c if second == "+" else product - c
    else:
        a = max(a, b * c + 1) if first == "−" else a
        product = b * c
        answer = a + product if first == "+" else a - product
        left_to_right = (a + b) * c if first == "+" else (a - b) * c
    shown = f"{a} {first} {b} {second} {c}"
    image = canvas(rng, 448, rng.choice([140, 168, 196]))
    drawn = draw_line(rng, image, f"{shown} = ?", rng.randint(34, 44))
    head = f"图中的算式是{shown}。" if zh else f"The image shows the expression {shown}."
    if first == "×":
        steps = [
            head,
            f"先算乘法：{a} × {b} = {product}。" if zh else f"Multiplication first: {a} × {b} = {product}.",
            f"再算{second}：{product} {second} {c} = {answer}。" if zh else f"Then {product} {second} {c} = {answer}.",
        ]
        wrong = answer + (1 if second == "+" else -1)  # a slip in the product: one too many
        wrong_steps = [
            head,
            f"先算乘法：{a} × {b} = {product + 1}。" if zh else f"Multiplication first: {a} × {b} = {product + 1}.",
            f"再算{second}：{product + 1} {second} {c} = {wrong}。"
            if zh
            else f"Then {product + 1} {second} {c} = {wrong}.",
        ]
    else:
        steps = [
            head,
            f"先算乘法：{b} × {c} = {product}。" if zh else f"Multiplication comes first: {b} × {c} = {product}.",
            f"再算：{a} {first} {product} = {answer}。" if zh else f"Then {a} {first} {product} = {answer}.",
        ]
        wrong = left_to_right
        mid = a + b if first == "+" else a - b
        wrong_steps = [
            head,
            f"从左往右算：{a} {first} {b} = {mid}。" if zh else f"Left to right: {a} {first} {b} = {mid}.",
            f"再乘{c}：{mid} × {c} = {wrong}。" if zh else f"Then {mid} × {c} = {wrong}.",
        ]
    steps.append(f"所以答案是{answer}。" if zh else f"So the answer is {answer}.")
    wrong_steps.append(f"所以答案是{wrong}。" if zh else f"So the answer is {wrong}.")
    py = f"{a} {PY[first]} {b} {PY[second]} {c}"
    code = f'# Python multiplies before it adds or subtracts, as arithmetic does\nprint("{py} =", {py})\n'
    question = rng.choice(
        ["图中算式的结果是多少？", "按运算顺序计算图中的算式。"]
        if zh
        else [
            "What is the value of the expression in the image?",
            "Evaluate the expression in the image, minding the order of operations.",
        ]
    )
    before = [head, "我用代码算一下。" if zh else "I will evaluate it with code."]
    analysis = (
        "算式有三个数，要注意运算顺序" if zh else "The expression has three numbers and the order of operations matters"
    )
    return finish(
        seed,
        lang,
        rng,
        image,
        question,
        answer,
        "number",
        steps,
        wrong,
        wrong_steps,
        code,
        f"{py} = {answer}",
        before,
        False,
        analysis,
        {"form": "expression"},
        [drawn],
    )


def compare(seed, lang, rng) -> Task:
    zh = lang == "zh"
    whole = rng.randint(0, 20)
    # a decimal with fewer digits that is larger: the classic trap (3.8 > 3.75)
    short = rng.randint(1, 9)
    long = rng.randint(10, 99)
    while long // 10 == short:
        long = rng.randint(10, 99)
    x, y = f"{whole}.{short}", f"{whole}.{long:02d}"
    a, b = (x, y) if rng.random() < 0.5 else (y, x)
    larger = "A" if float(a) > float(b) else "B"
    smaller = "B" if larger == "A" else "A"
    image = canvas(rng, 448, rng.choice([140, 168]))
    drawn = draw_line(rng, image, f"A: {a}      B: {b}", rng.randint(34, 42))
    question = (
        "图中A和B哪个数更大？请回答A或B。" if zh else "Which number in the image is larger, A or B? Answer A or B."
    )
    la, lb = (a + "0" if len(a) < len(b) else a), (b + "0" if len(b) < len(a) else b)
    steps = [
        f"A是{a}，B是{b}。" if zh else f"A is {a} and B is {b}.",
        f"整数部分都是{whole}，比较小数部分：把位数补齐，{a}写成{la}，{b}写成{lb}。"
        if zh
        else f"Both have {whole} before the point, so compare the decimals with equal digits: "
        f"{a} is {la} and {b} is {lb}.",
        f"{max(la, lb, key=float)}大于{min(la, lb, key=float)}，所以{larger}更大。"
        if zh
        else f"{max(la, lb, key=float)} is more than {min(la, lb, key=float)}, so {larger} is larger.",
    ]
    da, db = a.split(".")[1], b.split(".")[1]
    wrong_steps = [
        steps[0],
        f"比较小数点后的数字：{da}和{db}，{max(da, db, key=int)}更大。"
        if zh
        else f"Comparing the digits after the point: {da} and {db}; {max(da, db, key=int)} is bigger.",
        f"所以{smaller}更大。" if zh else f"So {smaller} is larger.",
    ]
    code = (
        f'from decimal import Decimal\n\na, b = Decimal("{a}"), Decimal("{b}")  # A and B in the image\n'
        'print("A =", a, " B =", b)\nprint("larger:", "A" if a > b else "B")\n'
    )
    before = [steps[0], "我用代码精确比较两个小数。" if zh else "I will compare the two decimals exactly with code."]
    analysis = "两个小数位数不同，容易比错" if zh else "The decimals have different numbers of digits, an easy trap"
    return finish(
        seed,
        lang,
        rng,
        image,
        question,
        larger,
        "choice",
        steps,
        smaller,
        wrong_steps,
        code,
        f"larger: {larger}",
        before,
        False,
        analysis,
        {"form": "compare"},
        [drawn],
        choices=["A", "B"],
    )


def cards(seed, lang, rng) -> Task:
    zh = lang == "zh"
    numbers = [rng.randint(10, 99) for _ in range(rng.randint(3, 4))]  # two digits: a lone digit is easy to overlook
    w, h = 448, rng.choice([168, 196, 224])
    image = canvas(rng, w, h)
    draw = ImageDraw.Draw(image)
    slot = w / len(numbers)
    face = lettering.pick(rng, "0123456789")
    font = lettering.load(face, rng.randint(30, 38))
    for i, n in enumerate(numbers):
        cx, cy = slot * (i + 0.5), h / 2 + rng.randint(-20, 20)
        fill = tuple(rng.randint(200, 235) for _ in range(3))
        draw.rounded_rectangle(
            (cx - slot * 0.38, cy - 34, cx + slot * 0.38, cy + 34), radius=8, fill=fill, outline=(90, 90, 90), width=2
        )
        left, top, right, bottom = drawing.text_size(font, str(n))
        draw.text((cx - (left + right) / 2, cy - (top + bottom) / 2), str(n), font=font, fill=(20, 20, 20))
    total = sum(numbers)
    listed = " + ".join(map(str, numbers))
    question = rng.choice(
        ["图中所有卡片上的数加起来是多少？", "把图中卡片上的数全部相加。"]
        if zh
        else ["What is the sum of the numbers on the cards?", "Add up the numbers on all the cards."]
    )
    steps = [
        f"卡片上的数从左到右是：{'、'.join(map(str, numbers))}。"
        if zh
        else f"The cards show, from left to right: {', '.join(map(str, numbers))}."
    ]
    running = numbers[0]
    for n in numbers[1:]:
        steps.append(f"{running} + {n} = {running + n}。" if zh else f"{running} + {n} = {running + n}.")
        running += n
    steps.append(f"所以总和是{total}。" if zh else f"So the sum is {total}.")
    skipped = numbers[:-1]
    wrong = sum(skipped)
    wrong_steps = [
        f"卡片上的数是：{'、'.join(map(str, skipped))}。" if zh else f"The cards show: {', '.join(map(str, skipped))}.",
        f"{' + '.join(map(str, skipped))} = {wrong}。" if zh else f"{' + '.join(map(str, skipped))} = {wrong}.",
        f"所以总和是{wrong}。" if zh else f"So the sum is {wrong}.",
    ]
    code = f'numbers = {numbers}  # the cards, left to right\nprint("{listed.replace(" ", "")} =", sum(numbers))\n'
    before = [steps[0], "我用代码把它们加起来。" if zh else "I will add them up with code."]
    simple = len(numbers) == 3 and total < 100
    analysis = (
        ("只有三个小数字相加" if zh else "Only three small numbers to add")
        if simple
        else (
            f"要把{len(numbers)}张卡片上的数都加起来"
            if zh
            else f"The numbers on {len(numbers)} cards must all be added"
        )
    )
    return finish(
        seed,
        lang,
        rng,
        image,
        question,
        total,
        "number",
        steps,
        wrong,
        wrong_steps,
        code,
        f"{listed.replace(' ', '')} = {total}",
        before,
        simple,
        analysis,
        {"form": "sum"},
        [[face.name, "".join(map(str, numbers))]],
    )
