"""The dataset card: its content, its Steps section, metadata the Hugging Face Hub accepts (checked
offline), and index.html as headless Chromium renders it.

The folders are written here with pyarrow and curation.schema's builders (no Spark, no job), so
these tests are fast and depend on the output-folder contract only."""

import inspect
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from curation import schema
from curation.card import SIZE_CATEGORIES, build_card, hub_metadata
from curation.dedup.decontam import detail
from curation.schema.manifest import file_sha256, write_manifest

ROOT = Path(__file__).resolve().parents[2]

# What the demo job's runner writes beside _funnel.json (the example of the issue that defined it).
STEP_STATS = {
    "job": "build_pretrain",
    "seconds": 41.2,
    "steps": [
        {"step": "validate", "seconds": 3.1, "reused": False, "rows_in": 534, "rows_out": 512,
         "stats": {"decoded": 520, "refused": 8, "reencoded": 3}},
        {"step": "near_dedup", "seconds": 5.0, "reused": True, "rows_in": 512, "rows_out": 498,
         "stats": {"candidate_pairs": 40, "confirmed_pairs": 18, "components": 12, "cluster_sizes": {"2": 10, "3": 2}}},
        {"step": "clip", "seconds": 2.0, "reused": False, "rows_in": 498, "rows_out": 450,
         "stats": {"scored": 498, "score_quantiles": {"p05": 0.11, "p50": 0.27, "p95": 0.33}}},
        {"step": "exact_dedup", "seconds": 0.4, "reused": False, "rows_in": 450, "rows_out": 450},
    ],
}

REJECT_SCHEMA = pa.schema([(name, pa.string()) for name in ("id", "source", "step", "reason", "detail", "origin")])


def png(width: int, height: int, color: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def write_output_folder(folder: Path, step_stats: dict | None = None) -> dict:
    """A complete output folder as a keyeforge job leaves it (card aside): 11 kept rows in two shards
    (source `first`: 6 English captions; `second`: 3 Chinese captions and 2 English VQA rows),
    4 rejects (2 undecodable, 2 benchmark overlaps: MMBench and ChartQA), the funnel, optionally
    `_stats.json`, and the manifest. Returns the manifest."""
    folder.mkdir(parents=True)
    rows = [
        schema.caption_row("first", png(56 + i, 56, (40 * i, 90, 200)), f"a blue square number {i}", lang="en")
        | {"clip_score": 0.2 + 0.01 * i}
        for i in range(6)
    ]
    rows += [schema.caption_row("second", png(60, 60 + i, (200, 30 * i, 40)), f"红色的方块{i}号", lang="zh") for i in range(3)]
    rows += [
        schema.make_row(
            "second", "vqa",
            [schema.message("user", schema.image_part(0), "What colour is it?"), schema.message("assistant", "Green.")],
            [schema.image_entry(png(64, 64, (20, 180 + i, 20)))], lang="en",
        )
        for i in range(2)
    ]
    assert all(schema.validate_row(r) == [] for r in rows)
    shards = []
    for index, part in enumerate((rows[:6], rows[6:])):
        path = folder / f"part-{index:05d}.parquet"
        pq.write_table(schema.rows_to_table(sorted(part, key=lambda r: r["id"])), path)
        shards.append({"path": path.name, "rows": len(part), "bytes": path.stat().st_size, "sha256": file_sha256(path)})

    rejects = [
        {"id": "r1", "source": "first", "step": "validate", "reason": "undecodable", "detail": "cannot identify image", "origin": "first/o1.jpg"},
        {"id": "r2", "source": "second", "step": "validate", "reason": "undecodable", "detail": "truncated", "origin": "second/o2.jpg"},
        {"id": "r3", "source": "first", "step": "decontam", "reason": "benchmark_overlap", "detail": detail("MMBench", "q1", "phash"), "origin": "first/o3.jpg"},
        {"id": "r4", "source": "second", "step": "decontam", "reason": "benchmark_overlap", "detail": detail("ChartQA", "7", "phash"), "origin": "second/o4.jpg"},
    ]
    (folder / "_rejects").mkdir()
    pq.write_table(pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA), folder / "_rejects" / "part-00000.parquet")
    funnel = {
        "input_rows": 15,
        "kept_rows": 11,
        "steps": [
            {"step": "validate", "in": 15, "out": 13, "rejected": {"undecodable": 2}},
            {"step": "decontam", "in": 13, "out": 11, "rejected": {"benchmark_overlap": 2}},
        ],
    }
    (folder / "_funnel.json").write_text(json.dumps(funnel))
    if step_stats is not None:
        (folder / "_stats.json").write_text(json.dumps(step_stats))
    manifest = {
        "schema_version": schema.SCHEMA_VERSION,
        "rows": len(rows),
        "bytes": sum(s["bytes"] for s in shards),
        "shards": shards,
        "rejects": {"rows": len(rejects)},
        "config": {"clip": {"enabled": True, "model": "tiny-random"}},
        "code_version": "0.1.0+test",
    }
    write_manifest(folder, manifest)
    return manifest


# --- content -------------------------------------------------------------------------------------


def test_card_rebuilds_from_any_output_folder(tmp_path):
    out = tmp_path / "o"
    manifest = write_output_folder(out)
    result = subprocess.run([sys.executable, "-m", "curation.card", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = (out / "card" / "README.md").read_text()
    assert f"{manifest['rows']:,} rows in {len(manifest['shards'])} shards" in text
    assert "| validate | 15 | 13 | 2 | undecodable: 2 |" in text
    assert "| first | caption | 6 |" in text and "| second | caption | 3 |" in text and "| second | vqa | 2 |" in text
    assert "| en | 8 |" in text and "| zh | 3 |" in text
    assert "**The CLIP scores in this dataset come from `tiny-random`" in text
    # the README is the Hub card of the folder's root: its plots are under card/
    assert "![Funnel](card/funnel.png)" in text and (out / "card" / "funnel.png").is_file()
    assert "## Steps" not in text  # no _stats.json: a folder from before it existed
    html = (out / "card" / "index.html").read_text()
    assert "<strong>The CLIP scores" in html and "<td>vqa</td>" in html and '<img src="funnel.png"' in html


def test_card_counts_benchmark_overlaps_per_benchmark(tmp_path):
    out = tmp_path / "b"
    write_output_folder(out)
    text = build_card(out).read_text()
    assert "## Benchmark overlap" in text
    assert "| MMBench | 1 |" in text and "| ChartQA | 1 |" in text
    assert "| decontam | benchmark_overlap | 2 |" in text


def test_steps_section_shows_each_steps_time_rows_and_statistics(tmp_path):
    out = tmp_path / "s"
    write_output_folder(out, step_stats=STEP_STATS)
    text = build_card(out).read_text()
    section = text.split("## Steps\n", 1)[1].split("\n## ", 1)[0]
    assert "Job `build_pretrain`: 4 steps in 41.2 s; 1 reused" in section
    assert "| step | seconds | reused | rows in | rows out | statistics |" in section
    assert "| validate | 3.1 | no | 534 | 512 | decoded: 520<br>refused: 8<br>reencoded: 3 |" in section
    # nested statistics are flattened as a.b: value
    assert ("| near_dedup | 5.0 | yes | 512 | 498 | candidate_pairs: 40<br>confirmed_pairs: 18<br>components: 12"
            "<br>cluster_sizes.2: 10<br>cluster_sizes.3: 2 |") in section
    assert "| clip | 2.0 | no | 498 | 450 | scored: 498<br>score_quantiles.p05: 0.11<br>score_quantiles.p50: 0.27<br>score_quantiles.p95: 0.33 |" in section
    assert "| exact_dedup | 0.4 | no | 450 | 450 | - |" in section  # a step without statistics
    html = (out / "card" / "index.html").read_text()
    assert "<h2>Steps</h2>" in html
    assert "<td>near_dedup</td><td>5.0</td><td>yes</td><td>512</td><td>498</td><td>candidate_pairs: 40<br>" in html
    assert "cluster_sizes.3: 2</td>" in html


def test_steps_statistics_of_any_shape_stay_readable(tmp_path):
    out = tmp_path / "shapes"
    # what a runner may record beyond the documented fields is shown too, not dropped
    stats = {"steps": [{"step": "ocr", "seconds": 123456.7, "reused": True, "computed_seconds": 99.5,
                        "rows_in": 1234567, "rows_out": 1200000,
                        "stats": {"engine": "rapidocr", "boxes": [3, 4.5, "n/a"], "by|lang": {"zh": {"lines": 7}}, "empty": {}}},
                       {"step": "base", "seconds": None, "rows_in": None}],
             "writer_seconds": {"funnel": 1.25, "shards": 3.0}}
    write_output_folder(out, step_stats=stats)
    section = build_card(out).read_text().split("## Steps\n", 1)[1].split("\n## ", 1)[0]
    assert "2 steps; 1 reused" in section
    assert ("| ocr | 123,456.7 | yes | 1,234,567 | 1,200,000 | engine: rapidocr<br>boxes: [3, 4.5, n/a]"
            "<br>by\\|lang.zh.lines: 7<br>empty: {}<br>computed_seconds: 99.5 |") in section
    assert "| base | - | no | - | - | - |" in section
    assert "`writer_seconds`: funnel: 1.25, shards: 3" in section


# --- Hub metadata, validated offline ---------------------------------------------------------------
# `DatasetCard.validate()` posts the card to the Hub's /api/validate-yaml, which needs the network.
# Offline, the card is checked against what that validation enforces, taken from the same sources:
# huggingface_hub's parser (the Hub server's YAML-block regex) and DatasetCardData, datasets' own
# lists (languages, size categories, multilinguality) and its check of `configs`, the Hub's
# license identifiers and dataset task categories (below), and `datasets.load_dataset` reading the
# folder the way it reads a Hub repository.

# https://huggingface.co/docs/hub/repositories-licenses (hub-docs, docs/hub/repositories-licenses.md)
HUB_LICENSES = set("""
apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 bigcode-openrail-m
afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5
cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0
cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0
cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1
lgpl-3.0 isc lppl-1.3c ms-pl mpl-2.0 odc-by odbl openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl
lgpl-lr deepfloyd-if-license llama2 gemma unknown other
""".split())
# The task categories the Hub offers for datasets: huggingface.js packages/tasks/src/pipelines.ts,
# PIPELINE_DATA without those marked hideInDatasets (image-text-to-text, document-question-answering, ...).
HUB_DATASET_TASKS = set("""
text-classification token-classification table-question-answering question-answering zero-shot-classification
translation summarization feature-extraction text-generation text2text-generation fill-mask sentence-similarity
text-to-speech text-to-audio automatic-speech-recognition audio-to-audio audio-classification
voice-activity-detection depth-estimation image-classification object-detection image-segmentation text-to-image
image-to-text image-to-image image-to-video unconditional-image-generation video-classification
reinforcement-learning robotics tabular-classification tabular-regression tabular-to-text table-to-text
multiple-choice text-ranking text-retrieval time-series-forecasting text-to-video visual-question-answering
zero-shot-image-classification graph-ml mask-generation zero-shot-object-detection text-to-3d image-to-3d
image-feature-extraction video-text-to-text
""".split())
# The keys of the Hub's dataset-card metadata spec (hub-docs, datasetcard.md); DatasetCardData's
# own parameters are added where they are read.
HUB_CARD_KEYS = {
    "language", "license", "license_name", "license_link", "license_details", "tags", "annotations_creators",
    "language_creators", "language_details", "pretty_name", "size_categories", "source_datasets",
    "task_categories", "task_ids", "paperswithcode_id", "configs", "dataset_info", "extra_gated_fields",
    "extra_gated_prompt", "train-eval-index",
}


def datasets_resource(name: str):
    from importlib.resources import files

    return json.loads(files("datasets.utils.resources").joinpath(name).read_text())


def hub_card_problems(readme: str, folder: Path) -> list[str]:
    """What the Hub would refuse in a dataset card's metadata, or what would stop `load_dataset` on
    the Hub from finding the data ([] if nothing), for a card that is the README.md of `folder`."""
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard, DatasetCardData

    problems = []
    card = DatasetCard(readme)  # the Hub's YAML-block regex; the metadata must be a mapping
    metadata = yaml.safe_load(readme.split("---\n", 2)[1])
    if card.data.to_dict() != metadata:
        problems.append(f"DatasetCardData does not keep the metadata as written: {card.data.to_dict()} != {metadata}")
    known_keys = HUB_CARD_KEYS | set(inspect.signature(DatasetCardData.__init__).parameters) - {"self", "kwargs"}
    problems += [f"unknown metadata key {key!r}" for key in metadata if key not in known_keys]

    license = metadata.get("license")
    for item in license if isinstance(license, list) else [license]:
        if item not in HUB_LICENSES:
            problems.append(f"license {item!r} is not a Hub license identifier")
    if license == "other" and not metadata.get("license_name"):
        problems.append("license other needs license_name")
    languages = datasets_resource("languages.json")
    problems += [f"language {code!r} is not an ISO 639 code the Hub knows" for code in metadata.get("language", [])
                 if code not in languages]
    problems += [f"multilinguality {m!r} unknown" for m in metadata.get("multilinguality", [])
                 if m not in datasets_resource("multilingualities.json")]
    problems += [f"task category {t!r} is not one the Hub offers for datasets" for t in metadata.get("task_categories", [])
                 if t not in HUB_DATASET_TASKS]
    sizes = metadata.get("size_categories", [])
    problems += [f"size category {s!r} unknown" for s in sizes if s not in datasets_resource("size_categories.json")]
    if not all(isinstance(t, str) for t in metadata.get("tags", [])) or not isinstance(metadata.get("pretty_name"), str):
        problems.append("tags must be strings and pretty_name a string")

    try:
        configs = MetadataConfigs.from_dataset_card_data(card.data)  # datasets' own check of `configs`
        configs.get_default_config_name()
    except ValueError as exc:
        return problems + [f"configs: {exc}"]
    for name, config in configs.items():
        for entry in config["data_files"]:
            paths = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
            if not any(next(folder.glob(path), None) for path in paths):
                problems.append(f"config {name!r} split {entry['split']!r}: {paths} match no file of {folder}")
    return problems


def test_card_metadata_is_what_the_hub_accepts(tmp_path):
    out = tmp_path / "hub"
    manifest = write_output_folder(out)
    readme = build_card(out).read_text()
    assert hub_card_problems(readme, out) == []
    metadata = yaml.safe_load(readme.split("---\n", 2)[1])
    assert metadata["size_categories"] == ["n<1K"]
    assert metadata["language"] == ["en", "zh"] and metadata["multilinguality"] == ["multilingual"]
    assert metadata["task_categories"] == ["image-to-text", "visual-question-answering"]
    assert metadata["license"] == "unknown"
    # the default config is exactly the manifest's shards, the rejects config the refused rows
    configs = {c["config_name"]: c["data_files"] for c in metadata["configs"]}
    assert sorted(p.name for p in out.glob(configs["default"][0]["path"])) == [s["path"] for s in manifest["shards"]]
    assert [p.relative_to(out).as_posix() for p in out.glob(configs["rejects"][0]["path"])] == ["_rejects/part-00000.parquet"]

    # Uploaded with card/README.md as the repository's README.md, load_dataset reads the configs the
    # way it does on the Hub (a local folder goes through the same README metadata and data_files).
    from datasets import load_dataset

    shutil.copy(out / "card" / "README.md", out / "README.md")
    kept = load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    assert list(kept) == ["train"] and kept["train"].num_rows == manifest["rows"]
    assert sorted(kept["train"]["id"]) == sorted(pq.read_table(out / "part-00000.parquet")["id"].to_pylist()
                                                 + pq.read_table(out / "part-00001.parquet")["id"].to_pylist())
    rejected = load_dataset(str(out), "rejects", cache_dir=str(tmp_path / "cache"))
    assert rejected["train"].num_rows == 4 and set(rejected["train"]["reason"]) == {"undecodable", "benchmark_overlap"}


def test_hub_check_catches_what_the_hub_refuses(tmp_path):
    # The offline check must fail on the mistakes the card used to make (and a few more), or its
    # passing would prove nothing.
    out = tmp_path / "bad"
    write_output_folder(out)
    good = hub_metadata("t", {"rows": 11, "counts": {"lang": {"en": 1}, "kind": {"caption": 1}}}, has_rejects=False)
    broken = {
        "size_categories": ["n>1M"],
        "license": "other",
        "language": ["english"],
        "task_categories": ["image-text-to-text"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "shards/*.parquet"}]}],
    }
    for key, value in broken.items():
        readme = "---\n" + yaml.safe_dump(good | {key: value}, sort_keys=False) + "---\n\n# t\n"
        assert hub_card_problems(readme, out), f"{key}: {value} passed the check"
    bad_configs = good | {"configs": [{"config_name": "default", "data_files": [{"split": "train-1", "path": "part-*.parquet"}]}]}
    assert hub_card_problems("---\n" + yaml.safe_dump(bad_configs) + "---\n", out)


@pytest.mark.parametrize("rows, category", [
    (0, "n<1K"), (999, "n<1K"), (1_000, "1K<n<10K"), (99_999, "10K<n<100K"), (1_000_000, "1M<n<10M"),
    (2_500_000_000, "1B<n<10B"), (10**12, "n>1T"),
])
def test_size_category_follows_the_row_count(rows, category):
    metadata = hub_metadata("t", {"rows": rows, "counts": {"lang": {}, "kind": {}}}, has_rejects=False)
    assert metadata["size_categories"] == [category]
    assert category in datasets_resource("size_categories.json")
    assert [c for _, c in SIZE_CATEGORIES] == [c for c in datasets_resource("size_categories.json") if c != "unknown"]


# --- index.html in headless Chromium --------------------------------------------------------------

# Appended to a copy of the page: after the load event (every image loaded or failed), one line per
# <img> in a <pre> that --dump-dom prints.
IMAGE_PROBE = """<script>
window.addEventListener("load", () => {
  const pre = document.createElement("pre");
  pre.id = "image-probe";
  pre.textContent = Array.from(document.images)
    .map(img => `${img.getAttribute("src")} ${img.complete && img.naturalWidth > 0 ? "loaded" : "broken"}`).join("\\n");
  document.body.appendChild(pre);
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    reason = "chromium is not installed (make system-packages installs Debian's chromium)"
    if os.environ.get("CI"):  # CI's set-up installs it: a skip there would hide a broken set-up
        pytest.fail(reason)
    pytest.skip(reason)


def run_chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    # as root Chromium needs --no-sandbox; the rest keeps a headless run off the network and quick
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}"]
    result = subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def image_states(browser: str, page: Path, profile: Path) -> dict[str, str]:
    probed = page.with_name("probe-" + page.name)
    probed.write_text(page.read_text().replace("</body>", IMAGE_PROBE + "</body>"))
    dom = run_chromium(browser, profile, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()).stdout
    probe = dom.split('<pre id="image-probe">', 1)[1].split("</pre>", 1)[0]
    return dict(line.rsplit(" ", 1) for line in probe.splitlines())


def test_card_html_renders_in_headless_chromium(tmp_path):
    from PIL import Image, ImageStat

    browser = chromium()
    out = tmp_path / "html"
    write_output_folder(out, step_stats=STEP_STATS)
    build_card(out)
    page = out / "card" / "index.html"
    plots = sorted(p.name for p in (out / "card").glob("*.png"))
    assert plots == ["clip.png", "funnel.png", "tokens.png"]

    assert image_states(browser, page, tmp_path / "profile") == {name: "loaded" for name in plots}

    screenshot = tmp_path / "card.png"
    run_chromium(browser, tmp_path / "profile-shot", f"--screenshot={screenshot}", "--window-size=1024,2400",
                 "--hide-scrollbars", page.as_uri())
    with Image.open(screenshot) as image:
        assert image.format == "PNG" and image.size == (1024, 2400)
        # text, tables and plots: far from one flat colour
        assert max(ImageStat.Stat(image.convert("L")).stddev) > 20
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or ()) > 50

    # the probe itself tells a missing plot
    (out / "card" / "tokens.png").unlink()
    states = image_states(browser, page, tmp_path / "profile-broken")
    assert states["tokens.png"] == "broken" and states["funnel.png"] == "loaded"
