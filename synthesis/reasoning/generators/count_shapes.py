"""Counting shapes by colour and kind: flat circles, squares and triangles on an off-white canvas.

Questions: how many <colour> <kind>s, how many <kind>s, how many <colour> shapes, and which of two
colours has more shapes (a choice). The reasoning lists the matching shapes from top to bottom with
their regions and [0, 1000) coordinates; the typical mistake (the wrong step) misses one or counts a
look-alike. The agentic code finds the colour's connected pieces and tells kinds by fill ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw

from synthesis.reasoning import palette, shapes_drawing, where
from synthesis.reasoning.shapes_drawing import name
from synthesis.reasoning.task import Task, encode_png, task_rng

KIND = "count_shapes"
SIDES = (336, 392, 448)  # multiples of 28: the model sees the pixels unresized


@dataclass
class Shape:
    kind: str
    colour: str
    x: int
    y: int
    size: int

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.size / 2, self.y + self.size / 2


def place(rng, width: int, height: int, count: int) -> list[Shape]:
    """`count` shapes whose boxes keep at least 8 px apart and 10 px from the border."""
    shapes: list[Shape] = []
    for _ in range(count * 60):
        if len(shapes) == count:
            break
        size = rng.randint(24, 46)
        x, y = rng.randint(10, width - size - 10), rng.randint(10, height - size - 10)
        if all(
            x + size + 8 <= s.x or s.x + s.size + 8 <= x or y + size + 8 <= s.y or s.y + s.size + 8 <= y for s in shapes
        ):
            shapes.append(Shape(rng.choice(shapes_drawing.KINDS), rng.choice(list(palette.SATURATED)), x, y, size))
    return shapes


def reading_order(shapes: list[Shape]) -> list[Shape]:
    return sorted(shapes, key=lambda s: (s.centre[1], s.centre[0]))


def described(shapes: list[Shape], lang: str, w: int, h: int, with_name: bool) -> str:
    parts = []
    for s in reading_order(shapes):
        cx, cy = s.centre
        spot = f"{where.region(cx, cy, w, h, lang)} {where.point(cx, cy, w, h)}"
        if with_name:
            label = (
                f"{palette.word(s.colour, lang)}{name(s.kind, lang)}"
                if lang == "zh"
                else f"a {palette.word(s.colour, lang)} {name(s.kind, lang)}"
            )
            parts.append(f"{label}（{spot}）" if lang == "zh" else f"{label} at the {spot}")
        else:
            parts.append(spot if lang == "zh" else f"one at the {spot}")
    return ("；" if lang == "zh" else "; ").join(parts)


def generate(seed: int, lang: str) -> Task:
    rng = task_rng(KIND, seed, lang)
    for _ in range(100):  # redraw until the chosen question has a well-posed answer
        width, height = rng.choice(SIDES), rng.choice(SIDES)
        shapes = place(rng, width, height, rng.randint(4, 12))
        ask = question_spec(rng, shapes)
        if ask is not None:
            break
    else:  # pragma: no cover - 100 draws always give one
        raise RuntimeError(f"no well-posed counting question for seed {seed}")
    background = palette.light_background(rng)
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    for s in shapes:
        shapes_drawing.draw(draw, s.kind, s.x, s.y, s.size, palette.rgb(s.colour))
    return build(seed, lang, rng, shapes, ask, encode_png(image), width, height)


def matches(shape: Shape, ask: dict) -> bool:
    return ask.get("colour") in (None, shape.colour) and ask.get("shape") in (None, shape.kind)


def question_spec(rng, shapes: list[Shape]) -> dict | None:
    form = rng.choice(["colour_shape", "colour_shape", "shape", "colour", "compare"])
    s = rng.choice(shapes)
    if form == "compare":
        colours = sorted({x.colour for x in shapes})
        if len(colours) < 2:
            return None
        a, b = rng.sample(colours, 2)
        if sum(x.colour == a for x in shapes) == sum(x.colour == b for x in shapes):
            return None
        return {"form": "compare", "colours": [a, b]}
    ask = {"form": form}
    if form in ("colour_shape", "colour"):
        ask["colour"] = s.colour
    if form in ("colour_shape", "shape"):
        ask["shape"] = s.kind
    return ask


def subject(ask: dict, lang: str, count: int = 2) -> str:
    """What is counted: 'red circles', 'triangles', 'blue shapes' / '红色圆形', ..."""
    colour = palette.word(ask["colour"], lang) if ask.get("colour") else ""
    if lang == "zh":
        return f"{colour}{name(ask['shape'], lang) if ask.get('shape') else '图形'}"
    noun = name(ask["shape"], lang, count) if ask.get("shape") else ("shape" if count == 1 else "shapes")
    return f"{colour} {noun}".strip()


def build(seed, lang, rng, shapes, ask, image: bytes, w: int, h: int) -> Task:
    zh = lang == "zh"
    if ask["form"] == "compare":
        return build_compare(seed, lang, rng, shapes, ask, image, w, h)
    hits = [s for s in shapes if matches(s, ask)]
    count = len(hits)
    what = subject(ask, lang)
    question = rng.choice(
        [f"图中有几个{what}？", f"数一数图中{what}的数量。"]
        if zh
        else [f"How many {what} are in the image?", f"Count the {what} in this picture."]
    )
    others = [s for s in shapes if not matches(s, ask)]
    steps = [
        f"题目问的是{what}的个数。图中一共有{len(shapes)}个图形。"
        if zh
        else f"The question asks for the number of {what}. The image has {len(shapes)} shapes in all.",
        (
            f"从上到下找{what}：{described(hits, lang, w, h, False)}。"
            if zh
            else f"Going from top to bottom, the {what}: {described(hits, lang, w, h, False)}."
        ),
    ]
    if others:
        steps.append(
            f"其余{len(others)}个图形颜色或形状不符，不计入。"
            if zh
            else f"The other {len(others)} shapes differ in colour or kind, so they do not count."
        )
    steps.append(f"所以共有{count}个{what}。" if zh else f"So there are {count} {subject(ask, lang, count)}.")
    # the typical mistake: a look-alike counted (same colour or same kind), or the last one missed
    lookalike = [s for s in others if s.colour == ask.get("colour") or s.kind == ask.get("shape")]
    if lookalike and (count < 2 or rng.random() < 0.5):
        wrong_hits, wrong = reading_order(hits + [lookalike[0]]), count + 1
    else:
        wrong_hits, wrong = reading_order(hits)[:-1], count - 1
    wrong_steps = [
        steps[0],
        (
            f"从上到下找{what}：{described(wrong_hits, lang, w, h, False) or '没有'}。"
            if zh
            else f"Going from top to bottom, the {what}: {described(wrong_hits, lang, w, h, False) or 'none'}."
        ),
        f"所以共有{wrong}个{what}。" if zh else f"So there are {wrong} {subject(ask, lang, wrong)}.",
    ]
    code, expect = agentic_code(ask, count)
    before = [
        steps[0],
        (
            f"我用代码找出{what}：按颜色取出像素，数连通的块，再按填充率判断形状。"
            if zh
            else f"I will count the {what} with code: take the pixels of each colour, count the "
            "connected pieces, and tell the kinds apart by how much of their box they fill."
        ),
    ]
    after = [
        f"代码数出{count}个{what}，与我在图中看到的一致：{described(hits, lang, w, h, False)}。"
        if zh
        else f"The code finds {count} {subject(ask, lang, count)}, as I see in the image: "
        f"{described(hits, lang, w, h, False)}.",
        f"所以答案是{count}。" if zh else f"So the answer is {count}.",
    ]
    simple = len(shapes) <= 6 and count <= 3
    analysis = (
        (f"图中只有{len(shapes)}个图形，数量很少" if zh else f"The image has only {len(shapes)} shapes to look at")
        if simple
        else (
            f"图中有{len(shapes)}个不同颜色和形状的图形，需要仔细区分"
            if zh
            else f"The image has {len(shapes)} shapes of different colours and kinds to tell apart"
        )
    )
    return Task(
        kind=KIND,
        seed=seed,
        lang=lang,
        images=[image],
        question=question,
        answer=str(count),
        answer_kind="number",
        steps=steps,
        agentic_code=code,
        task_type="reasoning~counting~shapes",
        agentic_before=before,
        agentic_after=after,
        agentic_expect=expect,
        distractor=str(wrong),
        wrong_steps=wrong_steps,
        simple=simple,
        analysis=analysis,
        choices=None,
        meta={"ask": ask, "shapes": len(shapes), "lettering": [], "size": [w, h]},
    )


def build_compare(seed, lang, rng, shapes, ask, image: bytes, w: int, h: int) -> Task:
    zh = lang == "zh"
    a, b = ask["colours"]
    na, nb = (sum(s.colour == c for s in shapes) for c in (a, b))
    wa, wb = palette.word(a, lang), palette.word(b, lang)
    more, fewer = (wa, wb) if na > nb else (wb, wa)
    question = (
        f"图中{wa}图形和{wb}图形哪个更多？请回答{wa}或{wb}。"
        if zh
        else f"Are there more {wa} shapes or {wb} shapes? Answer {wa} or {wb}."
    )
    listing = {c: described([s for s in shapes if s.colour == c], lang, w, h, False) for c in (a, b)}
    steps = [
        f"需要分别数出{wa}和{wb}图形。" if zh else f"I need to count the {wa} shapes and the {wb} shapes.",
        f"{wa}图形：{listing[a]}，共{na}个。" if zh else f"{wa.capitalize()} shapes: {listing[a]}; {na} in all.",
        f"{wb}图形：{listing[b]}，共{nb}个。" if zh else f"{wb.capitalize()} shapes: {listing[b]}; {nb} in all.",
        f"{max(na, nb)}大于{min(na, nb)}，所以{more}图形更多。"
        if zh
        else f"{max(na, nb)} is more than {min(na, nb)}, so there are more {more} shapes.",
    ]
    # the typical mistake: counting the shapes of one kind only for the larger colour
    wrong_steps = [
        steps[0],
        f"{more}图形比{fewer}图形少。" if zh else f"There look to be fewer {more} shapes than {fewer} shapes.",
        f"所以{fewer}图形更多。" if zh else f"So there are more {fewer} shapes.",
    ]
    code, expect = agentic_code(ask, None, (na, nb))
    before = [
        steps[0],
        "我用代码按颜色数连通的块。" if zh else "I will count the connected pieces of each colour with code.",
    ]
    after = [
        f"代码数出{wa}{na}个、{wb}{nb}个。" if zh else f"The code counts {na} {wa} and {nb} {wb} pieces.",
        f"所以{more}图形更多。" if zh else f"So there are more {more} shapes.",
    ]
    simple = len(shapes) <= 6
    analysis = (
        (f"图中只有{len(shapes)}个图形" if zh else f"Only {len(shapes)} shapes are shown")
        if simple
        else (
            f"图中有{len(shapes)}个图形，两种颜色都要数清楚"
            if zh
            else f"There are {len(shapes)} shapes and both colours need a careful count"
        )
    )
    return Task(
        kind=KIND,
        seed=seed,
        lang=lang,
        images=[image],
        question=question,
        answer=more,
        answer_kind="choice",
        steps=steps,
        agentic_code=code,
        task_type="reasoning~counting~shapes",
        agentic_before=before,
        agentic_after=after,
        agentic_expect=expect,
        distractor=fewer,
        wrong_steps=wrong_steps,
        simple=simple,
        analysis=analysis,
        choices=[wa, wb],
        meta={"ask": ask, "shapes": len(shapes), "lettering": [], "size": [w, h]},
    )


CODE_HEAD = '''import numpy as np
from PIL import Image

rgb = np.asarray(Image.open("image_0.png").convert("RGB")).astype(int)


def pieces(mask):
    """Connected pieces (4-neighbour) of a boolean mask, in scan order: (pixels, x0, y0, x1, y1)."""
    seen = np.zeros(mask.shape, bool)
    found = []
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        seen[y, x] = True
        stack, ys, xs = [(y, x)], [], []
        while stack:
            cy, cx = stack.pop()
            ys.append(cy)
            xs.append(cx)
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        found.append((len(ys), int(min(xs)), int(min(ys)), int(max(xs)), int(max(ys))))
    return found


def kind(pixels, x0, y0, x1, y1):
    fill = pixels / ((x1 - x0 + 1) * (y1 - y0 + 1))  # square ~1.0, circle ~0.79, triangle ~0.5
    return "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"


'''


def agentic_code(ask: dict, count: int | None, pair: tuple[int, int] | None = None) -> tuple[str, str]:
    """(code, the output line that states the result)."""
    if ask["form"] == "compare":
        lines = []
        for c, n in zip(ask["colours"], pair):
            lines.append(f"{c} = pieces(np.abs(rgb - np.array({palette.rgb(c)})).sum(axis=2) < 30)")
            lines.append(f'print("{c} shapes:", len({c}))')
        return CODE_HEAD + "\n".join(lines) + "\n", f"{ask['colours'][1]} shapes: {pair[1]}"
    colour, shape = ask.get("colour"), ask.get("shape")
    if colour:
        mask = f"np.abs(rgb - np.array({palette.rgb(colour)})).sum(axis=2) < 30  # {colour} pixels"
    else:
        mask = "np.abs(rgb - rgb[0, 0]).sum(axis=2) > 60  # everything that is not background"
    label = " ".join(x for x in (colour, (shape + "s") if shape else "shapes") if x)
    body = [
        f"mask = {mask}",
        "found = [(kind(*p), p) for p in pieces(mask)]",
        "for i, (k, (n, x0, y0, x1, y1)) in enumerate(found, 1):",
        '    print(f"piece {i}: box ({x0}, {y0})-({x1}, {y1}), {k}")',
        f'print("{label}:", sum(k == "{shape}" for k, _ in found))' if shape else f'print("{label}:", len(found))',
    ]
    return CODE_HEAD + "\n".join(body) + "\n", f"{label}: {count}"
