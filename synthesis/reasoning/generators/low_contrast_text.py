"""Reading low-contrast text: a line whose colour is a few grey levels from its background, with a
little sensor noise and uneven light, saved as PNG.

The reasoning names the two levels (from the generator's colours); the agentic code stretches the
contrast between the 1st and 99th percentile of the grey levels and saves the result to read from.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from synthesis.reasoning import drawing, lettering, texts
from synthesis.reasoning.task import Task, encode_png, task_rng

KIND = "low_contrast_text"


def generate(seed: int, lang: str) -> Task:
    rng = task_rng(KIND, seed, lang)
    zh = lang == "zh"
    text = texts.reading(rng, lang, long=True)
    face = lettering.pick(rng, text)
    w, h = rng.choice([392, 448]), rng.choice([112, 140, 168])
    size = rng.randint(26, 34)
    font = lettering.load(face, size)
    while font.getlength(text) > w - 48 and size > 16:
        size -= 2
        font = lettering.load(face, size)
    level = rng.randint(90, 190)
    tint = [rng.randint(-12, 12) for _ in range(3)]
    background = tuple(max(0, min(255, level + t)) for t in tint)
    delta = rng.randint(16, 28) * rng.choice([-1, 1])  # text darker or lighter than its background
    ink = tuple(max(0, min(255, c + delta)) for c in background)
    image = Image.new("RGB", (w, h), background)
    left, top, right, bottom = drawing.text_size(font, text)
    x = rng.randint(16, max(16, w - (right - left) - 16)) - left
    y = (h - (bottom - top)) // 2 - top + rng.randint(-8, 8)
    ImageDraw.Draw(image).text((x, y), text, font=font, fill=ink)
    # uneven light and sensor noise, from the task's own seed
    nrng = np.random.default_rng([seed, 7, 0 if lang == "en" else 1])
    ramp = np.linspace(-rng.uniform(0, 6), rng.uniform(0, 6), w)[None, :, None]
    noisy = np.asarray(image, np.float64) + ramp + nrng.normal(0, rng.uniform(0.8, 2.0), (h, w, 1))
    image = Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))
    png = encode_png(image)

    grey_bg, grey_ink = round(sum(background) / 3), round(sum(ink) / 3)
    lighter = delta > 0
    question = rng.choice(
        ["图中淡淡的文字写的是什么？", "图片上的字很浅，请读出来。"]
        if zh
        else ["What does the faint text in the image say?", "The text in this image is hard to see. What does it say?"]
    )
    steps = [
        (
            f"文字颜色（灰度约{grey_ink}）和背景（约{grey_bg}）只差{abs(grey_ink - grey_bg)}级，所以很难看清。"
            if zh
            else f"The text (grey level about {grey_ink}) is only {abs(grey_ink - grey_bg)} levels "
            f"{'lighter' if lighter else 'darker'} than the background (about {grey_bg}), so it is faint."
        ),
        "仔细沿着笔画的边缘看，可以分辨出每个字。"
        if zh
        else "Following the edges of the strokes closely, each letter can be made out.",
        f"逐字读：{texts.spelled(text, lang)}。" if zh else f"Letter by letter: {texts.spelled(text, lang)}.",
        f"所以文字是“{text}”。" if zh else f'So the text says "{text}".',
    ]
    wrong = texts.misread(rng, text)
    wrong_steps = steps[:2] + [
        f"逐字读：{texts.spelled(wrong, lang)}。" if zh else f"Letter by letter: {texts.spelled(wrong, lang)}.",
        f"所以文字是“{wrong}”。" if zh else f'So the text says "{wrong}".',
    ]
    before = [
        steps[0],
        "我用代码拉伸对比度，让文字清楚一些。"
        if zh
        else "I will stretch the contrast with code so the letters stand out.",
    ]
    after = [
        f"拉伸对比度后文字清楚了，写的是“{text}”。"
        if zh
        else f'With the contrast stretched the text is clear: "{text}".',
        f"所以文字是“{text}”。" if zh else f'So the text says "{text}".',
    ]
    analysis = (
        f"文字和背景只差{abs(delta)}级灰度，需要仔细辨认"
        if zh
        else f"The text differs from its background by only {abs(delta)} grey levels, so it needs a careful look"
    )
    return Task(
        kind=KIND,
        seed=seed,
        lang=lang,
        images=[png],
        question=question,
        answer=text,
        answer_kind="text",
        steps=steps,
        agentic_code=CODE,
        task_type="perception~ocr~low_contrast_text",
        agentic_before=before,
        agentic_after=after,
        agentic_expect="saved enhanced.png",
        distractor=wrong,
        wrong_steps=wrong_steps,
        simple=False,
        analysis=analysis,
        meta={"ask": {"read": "faint line"}, "lettering": [[face.name, text]], "font_size": size, "size": [w, h]},
    )


CODE = """import numpy as np
from PIL import Image

grey = np.asarray(Image.open("image_0.png").convert("L")).astype(float)
lo, hi = np.percentile(grey, [1, 99])
print(f"grey levels, 1st to 99th percentile: {lo:.0f} to {hi:.0f}")
stretched = np.clip((grey - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
Image.fromarray(stretched).save("enhanced.png")
print(f"saved enhanced.png: levels {lo:.0f}-{hi:.0f} now span 0-255")
"""
