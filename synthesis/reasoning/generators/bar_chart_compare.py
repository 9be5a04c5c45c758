"""Reading and comparing a bar chart: 3-6 bars against a gridded y-axis (0 to 10, 20, 50 or 100),
category labels under the bars, saved as PNG.

Every bar ends exactly on a gridline, so its value can be read. Questions: which category is
highest or lowest (choices), the difference or sum of two (numbers), how many are above a line.
The reasoning reads each bar from the gridlines; the typical mistake misreads one bar by a
gridline or two. The agentic code measures the bars' heights in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw

from synthesis.reasoning import drawing, lettering, palette
from synthesis.reasoning.task import Task, encode_png, task_rng

KIND = "bar_chart_compare"
CITIES = {
    "en": ["Paris", "Rome", "Tokyo", "Cairo", "Lima", "Delhi", "Seoul", "Dakar", "Quito", "Hanoi", "Madrid", "Berne"],
    "zh": ["北京", "上海", "广州", "深圳", "成都", "杭州", "武汉", "西安", "南京", "重庆", "天津", "苏州"],
}
TITLES = {
    "en": ["Visitors by city", "Sales by city", "Rainy days by city", "New shops by city"],
    "zh": ["各城市游客人数", "各城市销量", "各城市雨天数", "各城市新开店铺数"],
}
SCALES = ((10, 1), (20, 2), (50, 5), (100, 10))  # axis maximum, gridline step
GRID = (208, 208, 208)
AXIS = (80, 80, 80)


@dataclass
class Chart:
    labels: list[str]
    values: list[int]
    top: int  # axis maximum
    step: int  # gridline step
    baseline: int  # pixel row of 0
    per_step: int  # pixels between gridlines


def draw_chart(rng, lang: str, chart: Chart, colour: str, w: int, h: int) -> tuple[bytes, list[list[str]]]:
    """The chart as PNG, and [font name, text drawn with it] for every font used."""
    image = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    left, right = 52, w - 16
    title = rng.choice(TITLES[lang])
    title_face = lettering.pick(rng, title)
    font = lettering.load(title_face, 16)
    draw.text(((w - font.getlength(title)) / 2, 10), title, font=font, fill=(30, 30, 30))
    ticks = "".join(str(k * chart.step) for k in range(0, 11, 2))
    tick_face = lettering.pick(rng, ticks)
    tick_font = lettering.load(tick_face, 13)
    for k in range(11):
        y = chart.baseline - k * chart.per_step
        draw.line((left, y, right, y), fill=GRID)
        if k % 2 == 0:
            label = str(k * chart.step)
            lx, ly, rx, ry = drawing.text_size(tick_font, label)
            draw.text((left - 6 - rx, y - (ly + ry) / 2), label, font=tick_font, fill=(40, 40, 40))
    slot = (right - left) / len(chart.values)
    width = int(slot * rng.uniform(0.45, 0.6))
    label_face = lettering.pick(rng, "".join(chart.labels))
    label_font = lettering.load(label_face, 15)
    for i, (label, value) in enumerate(zip(chart.labels, chart.values)):
        centre = left + slot * (i + 0.5)
        x0 = int(centre - width / 2)
        height = value // chart.step * chart.per_step
        draw.rectangle((x0, chart.baseline - height, x0 + width - 1, chart.baseline - 1), fill=palette.rgb(colour))
        lx, ly, rx, ry = drawing.text_size(label_font, label)
        draw.text((centre - (lx + rx) / 2, chart.baseline + 8 - ly), label, font=label_font, fill=(30, 30, 30))
    draw.line((left, chart.baseline, right, chart.baseline), fill=AXIS)
    draw.line((left, chart.baseline - 10 * chart.per_step, left, chart.baseline), fill=AXIS)
    return encode_png(image), [
        [title_face.name, title],
        [tick_face.name, ticks],
        [label_face.name, "".join(chart.labels)],
    ]


def question_spec(rng, chart: Chart) -> dict | None:
    values = chart.values
    form = rng.choice(["max", "min", "diff", "sum", "above"])
    if form in ("max", "min"):
        extreme = max(values) if form == "max" else min(values)
        return {"form": form} if values.count(extreme) == 1 else None
    if form == "above":
        free = [k * chart.step for k in range(1, 10) if k * chart.step not in values]
        return {"form": "above", "line": rng.choice(free)} if free else None
    a, b = rng.sample(range(len(values)), 2)
    if form == "diff":
        if values[a] == values[b]:
            return None
        a, b = (a, b) if values[a] > values[b] else (b, a)
    return {"form": form, "a": chart.labels[a], "b": chart.labels[b]}


def generate(seed: int, lang: str) -> Task:
    rng = task_rng(KIND, seed, lang)
    for _ in range(100):
        top, step = rng.choice(SCALES)
        n = rng.randint(3, 6)
        per_step = rng.choice([20, 22, 24])
        chart = Chart(
            rng.sample(CITIES[lang], n),
            [rng.randint(1, 10) * step for _ in range(n)],
            top,
            step,
            44 + 10 * per_step,
            per_step,
        )
        ask = question_spec(rng, chart)
        if ask is not None:
            break
    else:  # pragma: no cover
        raise RuntimeError(f"no well-posed chart question for seed {seed}")
    w, h = 448, 336
    colour = rng.choice(list(palette.SATURATED))
    png, drawn = draw_chart(rng, lang, chart, colour, w, h)
    return build(seed, lang, rng, chart, ask, colour, png, drawn, (w, h))


def answer_of(chart: Chart, ask: dict, values: list[int] | None = None) -> tuple[str, str]:
    """(answer, answer kind) of the question on these values (the chart's, or misread ones)."""
    values = values if values is not None else chart.values
    by = dict(zip(chart.labels, values))
    if ask["form"] in ("max", "min"):
        pick = max if ask["form"] == "max" else min
        return chart.labels[values.index(pick(values))], "choice"
    if ask["form"] == "diff":
        return str(by[ask["a"]] - by[ask["b"]]), "number"
    if ask["form"] == "sum":
        return str(by[ask["a"]] + by[ask["b"]]), "number"
    return str(sum(v > ask["line"] for v in values)), "number"


def misread(chart: Chart, ask: dict) -> list[int]:
    """The values with one bar misread by a gridline or more (never off the axis), so that the
    answer changes."""
    values = list(chart.values)
    order = sorted(range(len(values)), key=values.__getitem__)
    if ask["form"] == "max":  # the runner-up read above the highest, or the highest below it
        if values[order[-1]] + chart.step <= chart.top:
            values[order[-2]] = values[order[-1]] + chart.step
        else:
            values[order[-1]] = values[order[-2]] - chart.step
    elif ask["form"] == "min":  # the lowest read above the next one, or the next one below it
        if values[order[1]] + chart.step <= chart.top:
            values[order[0]] = values[order[1]] + chart.step
        else:
            values[order[1]] = values[order[0]] - chart.step
    elif ask["form"] in ("diff", "sum"):  # the first named bar one gridline off
        i = chart.labels.index(ask["a"])
        values[i] += chart.step if values[i] + chart.step <= chart.top else -chart.step
    else:  # the bar nearest the line read on its other side
        i = min(range(len(values)), key=lambda j: abs(values[j] - ask["line"]))
        values[i] = ask["line"] + chart.step if values[i] < ask["line"] else ask["line"] - chart.step
    return values


def reading(chart: Chart, values: list[int], lang: str) -> str:
    sep = "，" if lang == "zh" else ", "
    return sep.join(f"{label}{v}" if lang == "zh" else f"{label} {v}" for label, v in zip(chart.labels, values))


def conclusion(chart: Chart, ask: dict, values: list[int], lang: str) -> list[str]:
    zh = lang == "zh"
    by = dict(zip(chart.labels, values))
    answer, _ = answer_of(chart, ask, values)
    if ask["form"] in ("max", "min"):
        word = ("最高" if ask["form"] == "max" else "最低") if zh else ("highest" if ask["form"] == "max" else "lowest")
        return [
            f"其中{word}的是{answer}（{by[answer]}）。" if zh else f"The {word} of these is {answer} ({by[answer]})."
        ]
    a, b = ask.get("a"), ask.get("b")
    if ask["form"] == "diff":
        return [
            f"{a}比{b}高：{by[a]} - {by[b]} = {answer}。" if zh else f"{a} minus {b}: {by[a]} - {by[b]} = {answer}."
        ]
    if ask["form"] == "sum":
        return [f"{a}加{b}：{by[a]} + {by[b]} = {answer}。" if zh else f"{a} plus {b}: {by[a]} + {by[b]} = {answer}."]
    above = [label for label, v in zip(chart.labels, values) if v > ask["line"]]
    names = ("、".join(above) if zh else ", ".join(above)) or ("没有" if zh else "none")
    return [
        f"超过{ask['line']}的有：{names}，共{answer}个。" if zh else f"Above {ask['line']}: {names}; that is {answer}."
    ]


def build(seed, lang, rng, chart: Chart, ask: dict, colour: str, png: bytes, drawn: list, size) -> Task:
    zh = lang == "zh"
    answer, kind = answer_of(chart, ask)
    a, b = ask.get("a"), ask.get("b")
    question = {
        "max": "图中哪个城市的数值最高？" if zh else "Which city has the highest value in the chart?",
        "min": "图中哪个城市的数值最低？" if zh else "Which city has the lowest value in the chart?",
        "diff": f"{a}的数值比{b}高多少？" if zh else f"How much higher is {a} than {b}?",
        "sum": f"{a}和{b}的数值加起来是多少？" if zh else f"What is the total of {a} and {b}?",
        "above": f"有几个城市的数值超过{ask.get('line')}？"
        if zh
        else f"How many cities have a value above {ask.get('line')}?",
    }[ask["form"]]
    axis = (
        f"纵轴从0到{chart.top}，每{chart.step}一条网格线。"
        if zh
        else f"The y-axis runs from 0 to {chart.top} with a gridline every {chart.step}."
    )
    read = (
        f"对照网格线读出每根柱子：{reading(chart, chart.values, lang)}。"
        if zh
        else f"Reading each bar against the gridlines: {reading(chart, chart.values, lang)}."
    )
    final = f"所以答案是{answer}。" if zh else f"So the answer is {answer}."
    steps = [axis, read, *conclusion(chart, ask, chart.values, lang), final]
    wrong_values = misread(chart, ask)
    wrong, _ = answer_of(chart, ask, wrong_values)
    wrong_steps = [
        axis,
        (
            f"对照网格线读出每根柱子：{reading(chart, wrong_values, lang)}。"
            if zh
            else f"Reading each bar against the gridlines: {reading(chart, wrong_values, lang)}."
        ),
        *conclusion(chart, ask, wrong_values, lang),
        f"所以答案是{wrong}。" if zh else f"So the answer is {wrong}.",
    ]
    per_unit = chart.per_step / chart.step
    code = CODE.format(rgb=palette.rgb(colour), colour=colour, baseline=chart.baseline, per_unit=per_unit)
    top_y = chart.baseline - 10 * chart.per_step
    before = [
        (
            f"纵轴的0在y={chart.baseline}像素，{chart.top}在y={top_y}像素，所以每个单位{per_unit:g}像素。"
            if zh
            else f"On the y-axis, 0 is at pixel row {chart.baseline} and {chart.top} at row {top_y}, "
            f"so one unit is {per_unit:g} pixels."
        ),
        "我用代码量出每根柱子的高度。" if zh else "I will measure the height of every bar with code.",
    ]
    names = "、".join(chart.labels) if zh else ", ".join(chart.labels)
    after = [
        f"从左到右的柱子分别是{names}：{reading(chart, chart.values, lang)}。"
        if zh
        else f"From left to right the bars are {names}: {reading(chart, chart.values, lang)}.",
        *conclusion(chart, ask, chart.values, lang),
        final,
    ]
    expect = "\n".join(f"bar {i}: value {v}" for i, v in enumerate(chart.values, 1))
    simple = len(chart.values) <= 4 and ask["form"] in ("max", "min")
    analysis = (
        (
            f"只有{len(chart.values)}根柱子，一眼就能比较"
            if zh
            else f"There are only {len(chart.values)} bars to compare"
        )
        if simple
        else (
            f"需要对照网格线读出{len(chart.values)}根柱子的数值再计算"
            if zh
            else f"Each of the {len(chart.values)} bars must be read against the gridlines before working it out"
        )
    )
    return Task(
        kind=KIND,
        seed=seed,
        lang=lang,
        images=[png],
        question=question,
        answer=answer,
        answer_kind=kind,
        steps=steps,
        agentic_code=code,
        task_type="reasoning~chart~bar_compare",
        agentic_before=before,
        agentic_after=after,
        agentic_expect=expect,
        distractor=wrong,
        wrong_steps=wrong_steps,
        simple=simple,
        analysis=analysis,
        choices=list(chart.labels) if kind == "choice" else None,
        meta={"ask": ask, "bars": len(chart.values), "lettering": drawn, "size": list(size)},
    )


CODE = """import numpy as np
from PIL import Image

rgb = np.asarray(Image.open("image_0.png").convert("RGB")).astype(int)
bars = np.abs(rgb - np.array({rgb})).sum(axis=2) < 30  # the {colour} bars
baseline, per_unit = {baseline}, {per_unit!r}  # pixel row of 0 on the y-axis, pixels per unit
columns = [int(x) for x in np.nonzero(bars.any(axis=0))[0]]
runs, start = [], columns[0]
for a, b in zip(columns, columns[1:] + [None]):
    if b != a + 1:  # a gap between columns ends a bar
        runs.append((start, a))
        start = b
tops = [int(np.nonzero(bars[:, (x0 + x1) // 2])[0].min()) for x0, x1 in runs]
for i, ((x0, x1), top) in enumerate(zip(runs, tops), 1):
    print(f"bar {{i}}: x {{x0}}-{{x1}}, top at row {{top}}, {{baseline - top}} px")
for i, top in enumerate(tops, 1):
    print(f"bar {{i}}: value {{round((baseline - top) / per_unit, 1):g}}")
"""
