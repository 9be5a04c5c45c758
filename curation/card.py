"""Dataset cards: a report a person can read, for any keyeforge output folder.

    python -m curation.card out/pretrain

(re)writes OUTPUT/card/: README.md with Hugging Face dataset-card metadata (YAML front matter),
counts per source, kind and language, the funnel, each step's time and statistics, rejects by
reason with examples, token and CLIP-score statistics, the schema; PNG plots; and index.html with
the same content. It reads only the folder (shards, _funnel.json, _stats.json, _rejects/, the
manifest), so it works on any output.

README.md is the folder's Hub card: its metadata is what the Hugging Face Hub accepts (license,
languages, task categories and size category from the Hub's lists; configs whose data_files are
the shards, and the rejects), and its links are relative to the output folder, which is the
dataset repository's root once uploaded with this file as its README.md. index.html is the local
view, with links relative to card/.
"""

from __future__ import annotations

import html
import json
import math
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds

from curation import schema
from curation.agreement import ballot, ballot_from_detail, judge_agreement
from curation.dedup.decontam import parse_detail
from curation.schema.manifest import CARD, FUNNEL, MANIFEST, REJECTS, STATS

SHARDS = "part-*.parquet"  # the kept shards, at the folder's root
REJECT_SHARDS = f"{REJECTS}/part-*.parquet"

# The Hub's size categories (datasets/utils/resources/size_categories.json): (rows below, category).
SIZE_CATEGORIES = [
    (10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M"), (10**7, "1M<n<10M"),
    (10**8, "10M<n<100M"), (10**9, "100M<n<1B"), (10**10, "1B<n<10B"), (10**11, "10B<n<100B"),
    (10**12, "100B<n<1T"), (float("inf"), "n>1T"),
]
# Hub task categories (huggingface.js pipelines.ts, those shown for datasets) of each row kind:
# what a model trained on such rows does. Preference and RL rows hold prompts with or without images.
KIND_TASKS = {
    "caption": ["image-to-text"],
    "ocr": ["image-to-text"],
    "interleaved": ["image-to-text"],
    "vqa": ["visual-question-answering"],
    "grounding": ["visual-question-answering"],
    "video": ["video-text-to-text"],
    "text": ["text-generation"],
    "preference": ["visual-question-answering", "text-generation"],
    "rl": ["visual-question-answering", "text-generation"],
}


def build_card(folder: str | Path, manifest: dict | None = None, title: str | None = None, license: str = "unknown") -> Path:
    """Write FOLDER/card/ (README.md, index.html, plots); the README's path. `license` is a Hub
    license id (https://hf.co/docs/hub/repositories-licenses): keyeforge cannot know the licenses
    of the sources it read, so the default says so."""
    folder = Path(folder)
    if manifest is None:
        manifest = json.loads((folder / MANIFEST).read_text())
    funnel = _read_json(folder / FUNNEL)
    step_stats = _read_json(folder / STATS)
    stats = _shard_stats(folder)
    rejects = _reject_stats(folder)
    out = folder / CARD
    out.mkdir(exist_ok=True)
    plots = _plots(out, stats, funnel)
    title = title or f"keyeforge dataset: {folder.resolve().name}"
    sections = _sections(manifest, funnel, step_stats, stats, rejects, plots)
    metadata = hub_metadata(title, stats, has_rejects=rejects["files"] > 0, license=license)
    (out / "README.md").write_text(
        _front_matter(metadata) + f"# {title}\n\n" + "\n".join(_markdown(s, f"{CARD}/") for s in sections)
    )
    (out / "index.html").write_text(_html(title, sections))
    return out / "README.md"


def _read_json(path: Path) -> dict | None:
    # _stats.json and _funnel.json are absent from folders written before they existed: no section then
    return json.loads(path.read_text()) if path.exists() else None


# --- statistics ----------------------------------------------------------------------------------


def _shard_stats(folder: Path) -> dict:
    files = sorted(str(p) for p in folder.glob(SHARDS))
    counts = {"source": Counter(), "kind": Counter(), "lang": Counter(), "source_kind": Counter()}
    tokens, clip, videos, ballots = [], [], {}, []
    if files:
        table = ds.dataset(files, format="parquet").to_table(
            columns=["source", "kind", "lang", "est_tokens", "clip_score", "extra", "task_types"])
        extras = table.column("extra").to_pylist()
        videos = _video_records(extras)
        ballots = _ballots(extras)
        counts["task_type"] = Counter((t[0] if t else None) for t in table.column("task_types").to_pylist())
        for source, kind, lang in zip(*(table.column(c).to_pylist() for c in ("source", "kind", "lang"))):
            counts["source"][source] += 1
            counts["kind"][kind] += 1
            counts["lang"][lang or "unknown"] += 1
            counts["source_kind"][(source, kind)] += 1
        tokens = [t for t in table.column("est_tokens").to_pylist() if t is not None]
        clip = [c for c in table.column("clip_score").to_pylist() if c is not None]
    return {"rows": sum(counts["source"].values()), "counts": counts, "tokens": tokens, "clip": clip, "videos": videos,
            "ballots": ballots}


def _video_records(extras: list) -> dict:
    """{origin: (video record, tasks)} of rows made from videos (their extra has a `video` record)."""
    found: dict = {}
    for text in extras:
        if not text or '"video"' not in text:
            continue
        extra = json.loads(text)
        if isinstance(extra.get("video"), dict) and "origin" in extra:
            record, tasks = found.setdefault(extra["origin"], (extra["video"], Counter()))
            tasks[extra.get("task", "interleaved")] += 1
    return found


def _task_types_section(types: Counter, step_stats: dict | None) -> tuple:
    """Rows per task type (a row's first `task_types` path): how many types, how even, which lead;
    and what a balancing step did (entropy before and after, the taxonomy's leaves covered)."""
    tagged = {t: n for t, n in types.items() if t}
    total = sum(tagged.values())
    bits = -sum(n / total * math.log2(n / total) for n in tagged.values())
    per_l1 = Counter()
    for t, n in tagged.items():
        per_l1[t.split("~")[0]] += n
    paragraphs = [f"{total:,} of {sum(types.values()):,} rows have a task type; {len(tagged):,} types have at least "
                  f"one row; entropy over types {bits:.3f} bits (uniform over them: {math.log2(len(tagged)):.3f})."]
    balance = next((st.get("stats") or {} for st in (step_stats or {}).get("steps") or () if st.get("step") == "balance_mixture"), None)
    if balance:
        cover = balance.get("taxonomy_coverage") or {}
        paragraphs.append(f"Balancing: {balance['rows_in']:,} rows over {balance['types_in']:,} types in, {balance['rows_kept']:,} kept; "
                          f"entropy over types {balance['entropy_bits_before']:.3f} bits before, {balance['entropy_bits_after']:.3f} after; "
                          f"{cover.get('with_a_kept_row', 0):,} of the taxonomy's {cover.get('leaf_types', 0):,} leaf types have a kept row.")
    rows = [("type (first task_types path)", "rows")] + sorted(tagged.items(), key=lambda kv: (-kv[1], kv[0]))[:15]
    rows += [("per first level: " + l1, n) for l1, n in sorted(per_l1.items(), key=lambda kv: (-kv[1], kv[0]))]
    return ("Task types", paragraphs, rows, None)


def _ballots(extras: list) -> list[dict]:
    """{judge: vote} of every row whose extra records judges' votes (TaskGalaxy's generated rows)."""
    found = []
    for text in extras:
        if text and '"votes"' in text and isinstance(votes := json.loads(text).get("votes"), list):
            found.append(ballot(votes))
    return found


def _judges_section(found: dict) -> tuple:
    """Agreement of the judges that voted on generated rows (curation.agreement.judge_agreement):
    the job's own tally when it wrote one, else the kept rows' extra.votes and the ballots in
    refused rows' details (both, or the agreement would only count the pairs the judges passed)."""
    kappa = found["fleiss_kappa"]
    paragraphs = [
        f"{found['items']:,} judged question-answer pairs; every judge voted on "
        f"{found['items_every_judge_voted']:,} of them; Fleiss' kappa there: "
        + ("undefined (no such items, or every vote alike)" if kappa is None else f"{kappa:.3f}") + "."]
    rows = [("judge or pair", "items voted (failed)", "yes rate or agreement")]
    rows += [(j, f"{v['votes']} ({v['failed']})", f"{v['yes'] / v['votes']:.3f}" if v["votes"] else "-")
             for j, v in found["judges"].items()]
    rows += [(pair, f"{v['items']}", "-" if v["agreement"] is None else f"{v['agreement']:.3f}") for pair, v in found["pairs"].items()]
    return ("Judges", paragraphs, rows, None)


def _videos_section(videos: dict, plots: dict) -> tuple:
    records = [record for record, _ in videos.values()]
    seconds = np.array([r["seconds"] for r in records])
    frames = np.array([r["sampled_frames"] for r in records])
    sources = Counter(r["transcript"] for r in records)
    spoken = sum(n for kind, n in sources.items() if kind != "none")
    tasks = Counter()
    for _, counted in videos.values():
        tasks.update(counted)
    paragraphs = [
        f"{len(records):,} videos, {seconds.sum() / 3600:.3f} hours (mean {seconds.mean():.1f} s, max {seconds.max():.1f} s); "
        f"{int(frames.sum()):,} sampled frames (mean {frames.mean():.1f} a video).",
        f"Transcript coverage: {spoken:,} of {len(records):,} videos ({spoken / len(records):.0%}) have speech text; "
        + ", ".join(f"{kind}: {n}" for kind, n in sorted(sources.items())) + ".",
    ]
    rows = [("rows from videos", "count")] + sorted(tasks.items())
    section = ("Videos", paragraphs, rows, plots.get("video_seconds"))
    return section


def _reject_stats(folder: Path) -> dict:
    files = sorted(str(p) for p in folder.glob(REJECT_SHARDS))
    by_reason, examples, benchmarks, ballots = Counter(), {}, Counter(), []
    if files:
        for r in ds.dataset(files, format="parquet").to_table().to_pylist():
            key = (r["step"], r["reason"])
            by_reason[key] += 1
            if len(examples.setdefault(key, [])) < 3:
                examples[key].append(r)
            if r["reason"] == "benchmark_overlap":
                benchmarks[parse_detail(r["detail"] or "").get("benchmark", "?")] += 1
            if (found := ballot_from_detail(r["detail"] or "")) is not None:
                ballots.append(found)
    return {"files": len(files), "by_reason": by_reason, "examples": examples, "benchmarks": benchmarks, "ballots": ballots}


# --- content -------------------------------------------------------------------------------------
# A section is (heading, paragraphs, table rows or None, image or None), rendered to both formats.


def _sections(manifest: dict, funnel: dict | None, step_stats: dict | None, stats: dict, rejects: dict,
              plots: dict) -> list[tuple]:
    clip_cfg = (manifest.get("config") or {}).get("clip") or {}
    sections = []
    overview = [
        f"{stats['rows']:,} rows in {len(manifest.get('shards', []))} shards "
        f"({sum(s['bytes'] for s in manifest.get('shards', [])) / 2**20:.1f} MiB), "
        f"schema version {manifest.get('schema_version')}, code {manifest.get('code_version')}."
    ]
    if clip_cfg.get("enabled") and clip_cfg.get("model") == "tiny-random":
        overview.append(
            "**The CLIP scores in this dataset come from `tiny-random`, an untrained smoke-test model: "
            "they mean nothing, and neither does the CLIP filtering.**"
        )
    sections.append(("Overview", overview, None, None))
    c = stats["counts"]
    sections.append(("Rows per source and kind", [], [("source", "kind", "rows")] + [(s, k, n) for (s, k), n in sorted(c["source_kind"].items())], None))
    sections.append(("Languages", [], [("lang", "rows")] + sorted(c["lang"].items()), None))
    if funnel:
        rows = [("step", "in", "out", "rejected", "by reason")]
        for step in funnel["steps"]:
            reasons = ", ".join(f"{r}: {n}" for r, n in step["rejected"].items()) or "-"
            rows.append((step["step"], step["in"], step["out"], step["in"] - step["out"], reasons))
        sections.append(("Funnel", [f"{funnel['input_rows']:,} rows in, {funnel['kept_rows']:,} kept."], rows, plots.get("funnel")))
    if step_stats:
        sections.append(_steps_section(step_stats))
    if rejects["by_reason"]:
        rows = [("step", "reason", "rows", "examples (origin: detail)")]
        for (step, reason), n in sorted(rejects["by_reason"].items()):
            ex = "; ".join(f"{e['origin']}: {(e['detail'] or '')[:80]}" for e in rejects["examples"][(step, reason)])
            rows.append((step, reason, n, ex))
        sections.append(("Rejects", ["Every refused row is in `_rejects/` with its id, step, reason and detail."], rows, None))
    if rejects["benchmarks"]:
        rows = [("benchmark", "training rows removed")] + sorted(rejects["benchmarks"].items())
        sections.append(("Benchmark overlap", ["Rows that matched an evaluation benchmark (decontamination)."], rows, None))
    if stats["tokens"]:
        t = np.array(stats["tokens"])
        sections.append((
            "Tokens (estimated)",
            [f"total {int(t.sum()):,}; per row mean {t.mean():.0f}, median {np.median(t):.0f}, p95 {np.percentile(t, 95):.0f}, max {t.max():,}."],
            None,
            plots.get("tokens"),
        ))
    if stats["clip"]:
        s = np.array(stats["clip"])
        sections.append((
            "CLIP scores",
            [f"{len(s):,} scored rows; mean {s.mean():.4f}, min {s.min():.4f}, max {s.max():.4f}; "
             f"model `{clip_cfg.get('model')}` ({clip_cfg.get('pretrained') or 'no pretrained weights'}), "
             f"mode {clip_cfg.get('mode')}."],
            None,
            plots.get("clip"),
        ))
    if stats["videos"]:
        sections.append(_videos_section(stats["videos"], plots))
    types = c.get("task_type") or Counter()
    if any(types):
        sections.append(_task_types_section(types, step_stats))
    if (step_stats or {}).get("judges"):  # the job's tally: every judged pair, also those refused later
        sections.append(_judges_section(step_stats["judges"]))
    elif stats["ballots"] or rejects["ballots"]:
        sections.append(_judges_section(judge_agreement(stats["ballots"] + rejects["ballots"])))
    sections.append(("Schema", [f"Every shard has the keyeforge sample contract, version {schema.SCHEMA_VERSION}:"],
                     [("column", "type")] + [(f.name, str(f.type)) for f in schema.SCHEMA], None))
    sections.append(("Loading", [
        "The shards are plain Parquet: `pyarrow.parquet.read_table`, `pandas.read_parquet`, DuckDB "
        f"`SELECT * FROM '{SHARDS}'`, Spark `spark.read.parquet`, or "
        f"`datasets.load_dataset('parquet', data_files='{SHARDS}')`.",
        f"On the Hugging Face Hub: upload the folder as a dataset repository with `{CARD}/README.md` as its "
        f"`README.md`; `datasets.load_dataset(REPO)` then reads the shards (config `default`)"
        + (" and `load_dataset(REPO, 'rejects')` the refused rows." if rejects["files"] else "."),
    ], None, None))
    return sections


STEP_COLUMNS = ("step", "seconds", "reused", "rows_in", "rows_out", "stats")


def _steps_section(step_stats: dict) -> tuple:
    """Each step's time, whether its result was reused from an earlier run, its rows, and its own
    statistics (nested ones flattened as `a.b: value`). Anything else the runner records, per step
    or for the job, is shown as well, flattened the same way, rather than dropped."""
    steps = step_stats.get("steps") or []
    rows = [("step", "seconds", "reused", "rows in", "rows out", "statistics")]
    for step in steps:
        extra = {key: value for key, value in step.items() if key not in STEP_COLUMNS}
        rows.append((
            step.get("step", "?"),
            _seconds(step.get("seconds")),
            "yes" if step.get("reused") else "no",
            _readable(step["rows_in"]) if step.get("rows_in") is not None else "-",
            _readable(step["rows_out"]) if step.get("rows_out") is not None else "-",
            [f"{key}: {value}" for key, value in _flatten(step.get("stats") or {}) + _flatten(extra)] or "-",
        ))
    reused = sum(1 for step in steps if step.get("reused"))
    summary = f"{len(steps)} step" + ("s" if len(steps) != 1 else "")
    if step_stats.get("job"):
        summary = f"Job `{step_stats['job']}`: " + summary
    if isinstance(step_stats.get("seconds"), (int, float)):
        summary += f" in {_seconds(step_stats['seconds'])} s"
    summary += f"; {reused} reused a result persisted by an earlier run with the same input and configuration."
    paragraphs = [summary]
    for key, value in step_stats.items():
        if key not in ("job", "seconds", "steps", "judges"):  # judges: a section of their own
            shown = ", ".join(f"{k}: {v}" for k, v in _flatten(value)) if isinstance(value, dict) else _readable(value)
            paragraphs.append(f"`{key}`: {shown or '-'}")
    return ("Steps", paragraphs, rows if steps else None, None)


def _seconds(value) -> str:
    return f"{value:,.1f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _flatten(stats: dict, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for key, value in stats.items():
        if isinstance(value, dict) and value:
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", _readable(value)))
    return out


def _readable(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_readable(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in _flatten(value)) + "}"
    return str(value)


def hub_metadata(title: str, stats: dict, has_rejects: bool, license: str = "unknown") -> dict:
    """The card's YAML metadata, in the Hub's dataset-card vocabulary."""
    rows = stats["rows"]
    # the Hub takes ISO 639 codes; rows whose language is unknown or not such a code are left out
    langs = sorted(lang for lang in stats["counts"]["lang"] if re.fullmatch(r"[a-z]{2,3}", lang))
    tasks = sorted({task for kind in stats["counts"]["kind"] for task in KIND_TASKS.get(kind, [])})
    configs = [{"config_name": "default", "data_files": [{"split": "train", "path": SHARDS}]}]
    if has_rejects:
        configs.append({"config_name": "rejects", "data_files": [{"split": "train", "path": REJECT_SHARDS}]})
    meta = {"pretty_name": title, "license": license}
    if langs:
        meta["language"] = langs
        meta["multilinguality"] = ["monolingual" if len(langs) == 1 else "multilingual"]
    if tasks:
        meta["task_categories"] = tasks
    meta["size_categories"] = [next(name for below, name in SIZE_CATEGORIES if rows < below)]
    meta["tags"] = ["keyeforge", f"schema-v{schema.SCHEMA_VERSION}"]
    meta["configs"] = configs
    return meta


def _front_matter(metadata: dict) -> str:
    import yaml

    return "---\n" + yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True) + "---\n\n"


def _cell(value) -> str:
    # a list is one cell with one item per line (a table row of its own would repeat the step)
    return "<br>".join(map(str, value)) if isinstance(value, list) else str(value)


def _markdown(section: tuple, image_prefix: str = "") -> str:
    heading, paragraphs, rows, image = section
    out = [f"## {heading}\n"] + [p + "\n" for p in paragraphs]
    if rows:
        out.append("| " + " | ".join(map(str, rows[0])) + " |")
        out.append("|" + "---|" * len(rows[0]))
        out += ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in r) + " |" for r in rows[1:]]
        out.append("")
    if image:
        out.append(f"![{heading}]({image_prefix}{image})\n")
    return "\n".join(out) + "\n"


def _html(title: str, sections: list[tuple]) -> str:
    def inline(text: str) -> str:
        text = html.escape(text)
        parts = text.split("**")
        text = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
        parts = text.split("`")
        return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))

    body = [f"<h1>{html.escape(title)}</h1>"]
    for heading, paragraphs, rows, image in sections:
        body.append(f"<h2>{html.escape(heading)}</h2>")
        body += [f"<p>{inline(p)}</p>" for p in paragraphs]
        if rows:
            head = "".join(f"<th>{html.escape(str(v))}</th>" for v in rows[0])
            cells = "".join("<tr>" + "".join(f"<td>{_html_cell(v)}</td>" for v in r) + "</tr>" for r in rows[1:])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
        if image:
            body.append(f'<img src="{image}" alt="{html.escape(heading)}">')
    style = "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}img{max-width:100%}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"


def _html_cell(value) -> str:
    return "<br>".join(html.escape(str(v)) for v in value) if isinstance(value, list) else html.escape(str(value))


def _plots(out: Path, stats: dict, funnel: dict | None) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = {}

    def save(name: str, fig) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=80, metadata={"Software": None})
        plt.close(fig)
        plots[name.split(".")[0]] = name

    if funnel and funnel["steps"]:
        fig, ax = plt.subplots(figsize=(6, 3))
        steps = [s["step"] for s in funnel["steps"]]
        ax.bar(steps, [s["out"] for s in funnel["steps"]], label="kept")
        ax.bar(steps, [s["in"] - s["out"] for s in funnel["steps"]], bottom=[s["out"] for s in funnel["steps"]], label="rejected")
        ax.set_ylabel("rows")
        ax.legend()
        save("funnel.png", fig)
    if stats["tokens"]:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.hist(stats["tokens"], bins=40)
        ax.set_xlabel("estimated tokens per row")
        save("tokens.png", fig)
    if stats["clip"]:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.hist(stats["clip"], bins=40)
        ax.set_xlabel("CLIP score")
        save("clip.png", fig)
    if stats.get("videos"):
        records = [record for record, _ in stats["videos"].values()]
        fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3))
        left.hist([r["seconds"] for r in records], bins=20)
        left.set_xlabel("video duration (s)")
        right.hist([r["sampled_frames"] for r in records], bins=20)
        right.set_xlabel("sampled frames per video")
        save("video_seconds.png", fig)
    return plots


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m curation.card OUTPUT_FOLDER")
    print(build_card(sys.argv[1]))
