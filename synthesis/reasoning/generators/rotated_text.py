"""Reading rotated text: a line on a card, turned by a right angle or an arbitrary one, pasted on a
plain canvas and saved as JPEG (so the sandbox sees image_0.jpg).

The reasoning says which way the line runs and how far to turn it back; the agentic code turns the
image back, crops to the ink and saves the straightened line for the reading that follows.
"""

from __future__ import annotations

from PIL import Image

from synthesis.reasoning import drawing, lettering, texts
from synthesis.reasoning.task import Task, encode_jpeg, task_rng

KIND = "rotated_text"


def orientation(angle: int, lang: str) -> tuple[str, str]:
    """(how the text lies, how to turn it back) for a counterclockwise rotation of `angle` degrees."""
    zh = lang == "zh"
    if angle == 90:
        return (
            "文字从下往上排，是逆时针转了90度"
            if zh
            else "the line runs from bottom to top: it is turned 90° counterclockwise",
            "顺时针转90度" if zh else "turn it 90° clockwise",
        )
    if angle == 270:
        return (
            "文字从上往下排，是顺时针转了90度"
            if zh
            else "the line runs from top to bottom: it is turned 90° clockwise",
            "逆时针转90度" if zh else "turn it 90° counterclockwise",
        )
    if angle == 180:
        return (
            "文字上下颠倒，转了180度" if zh else "the text is upside down: it is turned 180°",
            "转180度" if zh else "turn it 180°",
        )
    ccw = angle < 180
    degrees = angle if ccw else 360 - angle
    if zh:
        return (
            f"文字倾斜，大约{'逆' if ccw else '顺'}时针转了{degrees}度",
            f"{'顺' if ccw else '逆'}时针转{degrees}度",
        )
    return (
        f"the line is tilted about {degrees}° {'counterclockwise' if ccw else 'clockwise'}",
        f"turn it {degrees}° {'clockwise' if ccw else 'counterclockwise'}",
    )


def generate(seed: int, lang: str) -> Task:
    rng = task_rng(KIND, seed, lang)
    zh = lang == "zh"
    text = texts.reading(rng, lang)
    face = lettering.pick(rng, text)
    size = rng.randint(26, 34)
    font = lettering.load(face, size)
    while font.getlength(text) > 300 and size > 18:
        size -= 2
        font = lettering.load(face, size)
    if rng.random() < 0.5:
        angle = rng.choice([90, 180, 270])
    else:  # tilted by 25..155 degrees either way, in steps of 5 (what a reader can tell)
        angle = rng.choice([a for a in range(25, 340, 5) if not 160 <= a <= 200])
    ink = tuple(rng.randint(0, 60) for _ in range(3))
    paper = tuple(rng.randint(225, 250) for _ in range(3))
    line = drawing.card(text, font, ink + (255,), paper + (255,), rng.randint(10, 18), rng.randint(8, 14), "RGBA")
    turned = line.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    background = tuple(rng.randint(170, 215) for _ in range(3))
    w = min(448, max(224, drawing.round_up(turned.width + 40)))
    h = min(448, max(224, drawing.round_up(turned.height + 40)))
    canvas = Image.new("RGB", (w, h), background)
    x, y = rng.randint(8, max(8, w - turned.width - 8)), rng.randint(8, max(8, h - turned.height - 8))
    canvas.paste(turned, (x, y), turned)
    image = encode_jpeg(canvas, quality=rng.randint(88, 95))

    lies, back = orientation(angle, lang)
    question = rng.choice(
        ["图中旋转的文字写的是什么？", "读出图中卡片上的文字。"]
        if zh
        else ["What does the rotated text in the image say?", "Read the text on the card in this image."]
    )
    steps = [
        f"图中卡片上的{lies}。" if zh else f"The card in the image holds one line of text; {lies}.",
        f"把它{back}，文字就变成水平的了。" if zh else f"If I {back}, the line becomes horizontal.",
        f"逐字读：{texts.spelled(text, lang)}。"
        if zh
        else f"Reading it letter by letter: {texts.spelled(text, lang)}.",
        f"所以文字是“{text}”。" if zh else f'So the text says "{text}".',
    ]
    wrong = texts.misread(rng, text)
    wrong_steps = steps[:2] + [
        f"逐字读：{texts.spelled(wrong, lang)}。"
        if zh
        else f"Reading it letter by letter: {texts.spelled(wrong, lang)}.",
        f"所以文字是“{wrong}”。" if zh else f'So the text says "{wrong}".',
    ]
    code = CODE.format(angle=angle)
    before = [
        steps[0],
        f"我用代码把图{back}，再裁出文字部分。"
        if zh
        else f"I will {back} with code and crop to the text to read it straight.",
    ]
    after = [
        f"转正后的图片上写着“{text}”。" if zh else f'The straightened crop reads "{text}".',
        f"所以文字是“{text}”。" if zh else f'So the text says "{text}".',
    ]
    simple = angle == 180 and len(text) <= 6
    analysis = (
        ("文字只是上下颠倒，而且很短" if zh else "The text is short and only upside down")
        if simple
        else (
            f"{lies}，需要先想清楚方向再读"
            if zh
            else f"In this image {lies}, so the direction needs working out before reading"
        )
    )
    return Task(
        kind=KIND,
        seed=seed,
        lang=lang,
        images=[image],
        question=question,
        answer=text,
        answer_kind="text",
        steps=steps,
        agentic_code=code,
        task_type="perception~ocr~rotated_text",
        agentic_before=before,
        agentic_after=after,
        agentic_expect="saved straight.png",
        distractor=wrong,
        wrong_steps=wrong_steps,
        simple=simple,
        analysis=analysis,
        meta={
            "ask": {"read": "rotated line"},
            "lettering": [[face.name, text]],
            "font_size": size,
            "angle": angle,
            "size": [w, h],
        },
    )


CODE = """import numpy as np
from PIL import Image

img = Image.open("image_0.jpg").convert("RGB")
# PIL turns counterclockwise for positive angles: undo a {angle}-degree counterclockwise turn
straight = img.rotate(-{angle}, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=img.getpixel((0, 0)))
grey = np.asarray(straight.convert("L")).astype(int)
ys, xs = np.nonzero(grey < 110)  # the dark ink of the letters
x0, y0 = max(0, int(xs.min()) - 12), max(0, int(ys.min()) - 12)
x1, y1 = min(grey.shape[1], int(xs.max()) + 13), min(grey.shape[0], int(ys.max()) + 13)
print(f"ink box after turning: ({{x0}}, {{y0}})-({{x1}}, {{y1}})")
crop = straight.crop((x0, y0, x1, y1))
crop.save("straight.png")
print(f"saved straight.png ({{crop.width}} x {{crop.height}})")
"""
