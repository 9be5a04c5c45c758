"""Reading small text in a large image: a 448-pixel canvas with grey clutter and three or four
coloured notes, each holding a line of tiny text; the question names one note by its colour.

The reasoning locates the note (region, [0, 1000) box) and reads it; the typical mistake reads a
neighbouring note. The agentic code crops the note and enlarges it, the "crop and zoom" that Keye
trained its agentic mode on.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw

from synthesis.reasoning import drawing, lettering, palette, texts, where
from synthesis.reasoning.normalise import text_key
from synthesis.reasoning.task import Task, encode_png, task_rng

KIND = "small_text_zoom"


@dataclass
class Note:
    colour: str
    text: str
    x0: int
    y0: int
    x1: int
    y1: int


def clutter(draw: ImageDraw.ImageDraw, rng, w: int, h: int) -> None:
    """Grey boxes and lines: a busy scene in colours no note has."""
    for _ in range(rng.randint(4, 9)):
        level = rng.randint(150, 225)
        x, y = rng.randint(0, w - 40), rng.randint(0, h - 40)
        if rng.random() < 0.5:
            draw.rectangle((x, y, x + rng.randint(30, 160), y + rng.randint(20, 120)), fill=(level, level, level))
        else:
            draw.line((x, y, rng.randint(0, w), rng.randint(0, h)), fill=(level, level, level), width=rng.randint(1, 3))


def generate(seed: int, lang: str) -> Task:
    rng = task_rng(KIND, seed, lang)
    zh = lang == "zh"
    w, h = 448, rng.choice([392, 448])
    image = Image.new("RGB", (w, h), tuple(rng.randint(232, 246) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    clutter(draw, rng, w, h)
    colours = rng.sample(list(palette.LIGHT), rng.randint(3, 4))
    notes: list[Note] = []
    lettering_used = []
    for colour in colours:
        text = texts.reading(rng, lang)
        while any(text_key(text) == text_key(n.text) for n in notes):  # every note says something else
            text = texts.reading(rng, lang)
        face = lettering.pick(rng, text)
        font = lettering.load(face, rng.randint(12, 13) if zh else rng.randint(10, 12))
        lettering_used.append([face.name, text])
        note = drawing.card(
            text,
            font,
            tuple(rng.randint(0, 50) for _ in range(3)),
            palette.rgb(colour, palette.LIGHT),
            rng.randint(5, 8),
            rng.randint(4, 6),
        )
        for _ in range(200):  # a free spot, 6 px from other notes and the border
            x, y = rng.randint(6, w - note.width - 6), rng.randint(6, h - note.height - 6)
            if all(
                x + note.width + 6 <= n.x0 or n.x1 + 6 <= x or y + note.height + 6 <= n.y0 or n.y1 + 6 <= y
                for n in notes
            ):
                break
        else:  # pragma: no cover - the canvas is far larger than four notes
            raise RuntimeError(f"no room for a note (seed {seed})")
        image.paste(note, (x, y))
        notes.append(Note(colour, text, x, y, x + note.width, y + note.height))
    target = rng.choice(notes)
    png = encode_png(image)

    name = palette.word(target.colour, lang, palette.LIGHT)
    cx, cy = (target.x0 + target.x1) / 2, (target.y0 + target.y1) / 2
    spot = where.region(cx, cy, w, h, lang)
    box = where.box(target.x0, target.y0, target.x1, target.y1, w, h)
    question = rng.choice(
        [f"{name}便签上的小字写的是什么？", f"读出图中{name}便签上的文字。"]
        if zh
        else [f"What is written on the small {name} note?", f"Read the tiny text on the {name} note."]
    )
    steps = [
        f"{name}便签在图片的{spot}，位置约为{box}。"
        if zh
        else f"The {name} note is at the {spot} of the image, around {box}.",
        "上面的字很小，需要放大这一块来看。" if zh else "Its text is tiny, so I look closely at that small area.",
        f"放大后逐字读：{texts.spelled(target.text, lang)}。"
        if zh
        else f"Zoomed in, letter by letter: {texts.spelled(target.text, lang)}.",
        f"所以{name}便签上写的是“{target.text}”。" if zh else f'So the {name} note says "{target.text}".',
    ]
    # the typical mistake: reading the nearest other note
    other = min(
        (n for n in notes if n is not target),
        key=lambda n: ((n.x0 + n.x1) / 2 - cx) ** 2 + ((n.y0 + n.y1) / 2 - cy) ** 2,
    )
    other_box = where.box(other.x0, other.y0, other.x1, other.y1, w, h)
    wrong_steps = [
        (f"{name}便签在{other_box}附近。" if zh else f"The {name} note is around {other_box}."),
        f"放大后逐字读：{texts.spelled(other.text, lang)}。"
        if zh
        else f"Zoomed in, letter by letter: {texts.spelled(other.text, lang)}.",
        f"所以{name}便签上写的是“{other.text}”。" if zh else f'So the {name} note says "{other.text}".',
    ]
    margin = 4
    crop = (
        max(0, target.x0 - margin),
        max(0, target.y0 - margin),
        min(w, target.x1 + margin),
        min(h, target.y1 + margin),
    )
    factor = max(2, min(4, 448 // (crop[2] - crop[0])))
    code = CODE.format(crop=crop, factor=factor)
    before = [
        steps[0],
        f"字太小了，我用代码裁出这块区域并放大{factor}倍。"
        if zh
        else f"The text is too small to read, so I crop that area with code and enlarge it {factor} times.",
    ]
    after = [
        f"放大后的图上写着“{target.text}”。" if zh else f'The enlarged crop reads "{target.text}".',
        f"所以{name}便签上写的是“{target.text}”。" if zh else f'So the {name} note says "{target.text}".',
    ]
    analysis = (
        f"图里有{len(notes)}张便签，字都很小，要先找到{name}的那张再放大看"
        if zh
        else f"There are {len(notes)} notes with tiny text; the {name} one must be found and looked at closely"
    )
    return Task(
        kind=KIND,
        seed=seed,
        lang=lang,
        images=[png],
        question=question,
        answer=target.text,
        answer_kind="text",
        steps=steps,
        agentic_code=code,
        task_type="perception~ocr~small_text_zoom",
        agentic_before=before,
        agentic_after=after,
        agentic_expect="saved zoom.png",
        distractor=other.text,
        wrong_steps=wrong_steps,
        simple=False,
        analysis=analysis,
        meta={"ask": {"note": target.colour}, "notes": len(notes), "lettering": lettering_used, "size": [w, h]},
    )


CODE = """from PIL import Image

img = Image.open("image_0.png").convert("RGB")
box = {crop}  # the note, with a small margin: (left, top, right, bottom)
crop = img.crop(box)
zoom = crop.resize((crop.width * {factor}, crop.height * {factor}), Image.Resampling.LANCZOS)
zoom.save("zoom.png")
print(f"cropped {{box}} ({{crop.width}} x {{crop.height}} px)")
print(f"saved zoom.png ({{zoom.width}} x {{zoom.height}} px, {factor}x)")
"""
