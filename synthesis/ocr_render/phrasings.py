"""Question phrasings, in English and Chinese, for each ground-truth task."""

from __future__ import annotations

import random

PHRASES = {
    "full_page": {
        "en": [
            "Read all the text in this image.",
            "What does this image say? Transcribe it line by line.",
            "Transcribe every line of text you can see.",
            "Please perform OCR on this image and output the text.",
            "Extract all of the text from the picture, in reading order.",
            "Write down the text shown in the image.",
        ],
        "zh": [
            "识别图中的所有文字。",
            "请把图片里的文字逐行写出来。",
            "图片上写了什么？请完整转录。",
            "请对这张图片进行OCR识别，输出其中的文字。",
            "按阅读顺序提取图像中的全部文本。",
            "写出图中显示的文字内容。",
        ],
    },
    "read_box": {
        "en": [
            "What is written in the region {box}?",
            "Read the text inside the box {box}.",
            "The box {box} (coordinates out of 1000) contains some text. What does it say?",
            "Transcribe the text located at {box}.",
        ],
        "zh": [
            "区域{box}中写的是什么？",
            "请读出框{box}内的文字。",
            "坐标框{box}（千分比坐标）里的文字是什么？",
            "转录位于{box}的文字。",
        ],
    },
    "where": {
        "en": [
            'Where is the text "{text}" in the image? Answer with its bounding box.',
            'Locate "{text}" and give its box as [x1, y1, x2, y2] out of 1000.',
            'Find the text "{text}". Which box contains it?',
            'Give the bounding box of "{text}".',
        ],
        "zh": [
            "文字“{text}”在图中的什么位置？请给出边界框。",
            "请定位“{text}”，用[x1, y1, x2, y2]（千分比）回答。",
            "找到文字“{text}”，它在哪个框里？",
            "给出“{text}”的边界框坐标。",
        ],
    },
    "table": {
        "en": [
            "Convert this table to Markdown.",
            "Write the table in the image as a Markdown table.",
            "Transcribe the table, keeping its rows and columns, in Markdown.",
        ],
        "zh": [
            "把图中的表格转换成Markdown格式。",
            "请用Markdown表格写出图片中的表格。",
            "保留行列结构，把这个表格转写为Markdown。",
        ],
    },
}


def question(rng: random.Random, task: str, lang: str, **fields) -> str:
    return rng.choice(PHRASES[task][lang]).format(**fields)
