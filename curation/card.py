"""Dataset cards: a report a person can read, for any keyeforge output folder.

    python -m curation.card out/pretrain

(re)writes OUTPUT/card/: README.md with Hugging Face dataset-card metadata (YAML front matter),
counts per source, kind and language, the funnel, rejects by reason with examples, token and
CLIP-score statistics, the schema; PNG plots; and index.html with the same content. It reads only
the folder (shards, _funnel.json, _rejects/, the manifest), so it works on any output.
"""

from __future__ import annotations

import html
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds

from curation import schema
from curation.dedup.decontam import parse_detail

CARD = "card"


def build_card(folder: str | Path, manifest: dict | None = None, title: str | None = None) -> Path:
    folder = Path(folder)
    if manifest is None:
        manifest = json.loads((folder / "_manifest.json").read_text())
    funnel = json.loads((folder / "_funnel.json").read_text()) if (folder / "_funnel.json").exists() else None
    stats = _shard_stats(folder)
    rejects = _reject_stats(folder)
    out = folder / CARD
    out.mkdir(exist_ok=True)
    plots = _plots(out, stats, funnel)
    title = title or f"keyeforge dataset: {folder.resolve().name}"
    sections = _sections(manifest, funnel, stats, rejects, plots)
    (out / "README.md").write_text(_front_matter(title, manifest, stats) + f"# {title}\n\n" + "\n".join(_markdown(s) for s in sections))
    (out / "index.html").write_text(_html(title, sections))
    return out / "README.md"


# --- statistics ----------------------------------------------------------------------------------


def _shard_stats(folder: Path) -> dict:
    files = sorted(str(p) for p in folder.glob("part-*.parquet"))
    counts = {"source": Counter(), "kind": Counter(), "lang": Counter(), "source_kind": Counter()}
    tokens, clip = [], []
    if files:
        table = ds.dataset(files, format="parquet").to_table(columns=["source", "kind", "lang", "est_tokens", "clip_score"])
        for source, kind, lang in zip(*(table.column(c).to_pylist() for c in ("source", "kind", "lang"))):
            counts["source"][source] += 1
            counts["kind"][kind] += 1
            counts["lang"][lang or "unknown"] += 1
            counts["source_kind"][(source, kind)] += 1
        tokens = [t for t in table.column("est_tokens").to_pylist() if t is not None]
        clip = [c for c in table.column("clip_score").to_pylist() if c is not None]
    return {"rows": sum(counts["source"].values()), "counts": counts, "tokens": tokens, "clip": clip}


def _reject_stats(folder: Path) -> dict:
    files = sorted(str(p) for p in (folder / "_rejects").glob("part-*.parquet"))
    by_reason, examples, benchmarks = Counter(), {}, Counter()
    if files:
        for r in ds.dataset(files, format="parquet").to_table().to_pylist():
            key = (r["step"], r["reason"])
            by_reason[key] += 1
            if len(examples.setdefault(key, [])) < 3:
                examples[key].append(r)
            if r["reason"] == "benchmark_overlap":
                benchmarks[parse_detail(r["detail"] or "").get("benchmark", "?")] += 1
    return {"by_reason": by_reason, "examples": examples, "benchmarks": benchmarks}


# --- content -------------------------------------------------------------------------------------
# A section is (heading, paragraphs, table rows or None, image or None), rendered to both formats.


def _sections(manifest: dict, funnel: dict | None, stats: dict, rejects: dict, plots: dict) -> list[tuple]:
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
    sections.append(("Schema", [f"Every shard has the keyeforge sample contract, version {schema.SCHEMA_VERSION}:"],
                     [("column", "type")] + [(f.name, str(f.type)) for f in schema.SCHEMA], None))
    sections.append(("Loading", [
        "The shards are plain Parquet: `pyarrow.parquet.read_table`, `pandas.read_parquet`, DuckDB "
        "`SELECT * FROM 'part-*.parquet'`, Spark `spark.read.parquet`, or "
        "`datasets.load_dataset('parquet', data_files='part-*.parquet')`."
    ], None, None))
    return sections


def _front_matter(title: str, manifest: dict, stats: dict) -> str:
    n = stats["rows"]
    size = "n<1K" if n < 1_000 else "1K<n<10K" if n < 10_000 else "10K<n<100K" if n < 100_000 else "100K<n<1M" if n < 1_000_000 else "n>1M"
    langs = sorted(l for l in stats["counts"]["lang"] if l != "unknown") or ["en"]
    meta = {
        "pretty_name": title,
        "language": langs,
        "license": "other",
        "task_categories": ["image-to-text", "visual-question-answering"],
        "size_categories": [size],
        "tags": ["keyeforge", f"schema-v{schema.SCHEMA_VERSION}"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "part-*.parquet"}]}],
    }
    import yaml

    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n"


def _markdown(section: tuple) -> str:
    heading, paragraphs, rows, image = section
    out = [f"## {heading}\n"] + [p + "\n" for p in paragraphs]
    if rows:
        out.append("| " + " | ".join(map(str, rows[0])) + " |")
        out.append("|" + "---|" * len(rows[0]))
        out += ["| " + " | ".join(str(v).replace("|", "\\|") for v in r) + " |" for r in rows[1:]]
        out.append("")
    if image:
        out.append(f"![{heading}]({image})\n")
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
            cells = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows[1:])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
        if image:
            body.append(f'<img src="{image}" alt="{html.escape(heading)}">')
    style = "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}img{max-width:100%}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"


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
    return plots


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m curation.card OUTPUT_FOLDER")
    print(build_card(sys.argv[1]))
