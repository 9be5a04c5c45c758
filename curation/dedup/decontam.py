"""Benchmark decontamination: training rows that show a benchmark's image are rejected.

Rules (Keye-VL report, appendix A), each a setting:

* pHash: any image of a kept row within `max_hamming` bits of a benchmark image's 64-bit pHash,
  or with the same decoded pixels, is an overlap. A multi-image row overlaps when any image does.
* CLIP (post-training data, off by default): a row overlaps a benchmark item when the image
  embeddings' cosine is >= `clip_image_threshold` (0.98) and the text embeddings' cosine is
  >= `clip_text_threshold` (0.50), with the model of ``curation.clip_filter``.

Overlapping rows get reason `benchmark_overlap`, detail ``benchmark=NAME item=ID by=phash|clip``
(space-separated key=value; whitespace in names and ids is replaced by `_`), so a card can count
overlaps per benchmark. The benchmark fingerprints are computed on the driver and shipped to the
executors inside the batch function; the training side runs in mapInPandas batches.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from curation.dedup import image_hash
from curation.dedup.benchmarks import BenchmarkConfig, BenchmarkItem, load_benchmark
from curation.row_text import row_text
from curation.spark import checkpoint
from curation.steps import Step, is_kept, mark, with_reject_column

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

STEP = "decontam"
REASON = "benchmark_overlap"


@dataclass
class DecontamConfig:
    enabled: bool = True
    benchmarks: list[BenchmarkConfig] = field(default_factory=list)
    phash: bool = True
    max_hamming: int = 10
    bands: int = 48
    bits_per_band: int = 14
    seed: int = 1
    clip: bool = False  # the CLIP image+text rule, for post-training data
    clip_image_threshold: float = 0.98
    clip_text_threshold: float = 0.50
    clip_model: str = "tiny-random"  # as clip.model in curation.clip_filter
    clip_pretrained: str | None = None
    clip_batch_size: int = 32


def detail(benchmark: str, item: str, by: str) -> str:
    clean = lambda s: "_".join(str(s).split()) or "_"
    return f"benchmark={clean(benchmark)} item={clean(item)} by={by}"


def parse_detail(text: str) -> dict[str, str]:
    """{"benchmark": ..., "item": ..., "by": ...} from a `benchmark_overlap` detail."""
    return dict(part.split("=", 1) for part in text.split() if "=" in part)


@dataclass
class _BenchIndex:
    """Fingerprints of every benchmark image, in arrays that travel to executors."""

    names: list[tuple[str, str]]  # per image: (benchmark, item)
    pixel_hashes: dict[str, int]
    phashes: np.ndarray
    bands: dict[tuple[int, int], np.ndarray]  # (band, value) -> image indices


def _bench_index(items: list[BenchmarkItem], cfg: DecontamConfig) -> _BenchIndex:
    names, pixel_hashes, phashes = [], {}, []
    for it in items:
        for data in it.images:
            img = image_hash.decode(data)
            if img is None:
                log.warning("benchmark %s item %s has an unreadable image; it is not compared", it.benchmark, it.item)
                continue
            pixel_hashes.setdefault(image_hash.pixel_hash(img), len(names))
            phashes.append(image_hash.phash(img))
            names.append((it.benchmark, it.item))
    hashes = np.asarray(phashes, dtype=np.int64)
    positions = image_hash.band_positions(cfg.bands, cfg.bits_per_band, cfg.seed)
    values = image_hash.band_values(hashes, positions) if len(hashes) else np.zeros((0, cfg.bands), np.int64)
    bands: dict[tuple[int, int], list[int]] = {}
    for i, row in enumerate(values):
        for b, v in enumerate(row):
            bands.setdefault((b, int(v)), []).append(i)
    return _BenchIndex(names, pixel_hashes, hashes, {k: np.asarray(v) for k, v in bands.items()})


class _PhashMatcher:
    """mapInPandas function: (id, images) -> (id, detail) for rows with a benchmark image."""

    def __init__(self, index: _BenchIndex, cfg: DecontamConfig):
        self.index, self.cfg = index, cfg
        self.positions = image_hash.band_positions(cfg.bands, cfg.bits_per_band, cfg.seed)

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd  # in the workers only: a driver planning the steps does not load pandas

        for batch in batches:
            ids, details = [], []
            for row_id, images in zip(batch["id"], batch["images"]):
                match = self._match(images)
                if match is not None:
                    ids.append(row_id)
                    details.append(detail(*self.index.names[match], "phash"))
            yield pd.DataFrame({"id": ids, "detail": details}, dtype=object)

    def _match(self, images) -> int | None:
        """The first benchmark image (by index: benchmarks then items in order) any image matches."""
        best = None
        for data in images if images is not None else ():
            img = image_hash.decode(data) if data is not None else None
            if img is None:
                continue
            exact = self.index.pixel_hashes.get(image_hash.pixel_hash(img))
            if exact is not None:
                best = exact if best is None else min(best, exact)
                continue
            h = np.int64(image_hash.phash(img))
            values = image_hash.band_values(np.asarray([h]), self.positions)[0]
            found = [self.index.bands.get((b, int(v))) for b, v in enumerate(values)]
            found = [f for f in found if f is not None]
            if not found:
                continue
            candidates = np.unique(np.concatenate(found))
            close = candidates[image_hash.hamming(self.index.phashes[candidates], h) <= self.cfg.max_hamming]
            if len(close):
                best = int(close.min()) if best is None else min(best, int(close.min()))
        return best


class _ClipMatcher:
    """mapInPandas function: (id, images, text) -> (id, detail) where some image and the text are
    both close to one benchmark item's (cosine thresholds)."""

    def __init__(self, clip_cfg, items: list[tuple[str, str]], image_emb: np.ndarray, image_item: np.ndarray,
                 text_emb: np.ndarray, cfg: DecontamConfig):
        self.clip_cfg, self.items, self.cfg = clip_cfg, items, cfg
        self.image_emb, self.image_item, self.text_emb = image_emb, image_item, text_emb

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd  # in the workers only: a driver planning the steps does not load pandas

        from curation.clip_filter import load_clip

        model = load_clip(self.clip_cfg)
        size = max(1, self.cfg.clip_batch_size)
        for batch in batches:
            # Every readable image of the batch's rows with text, embedded in model-sized chunks.
            rows, images, owner = [], [], []
            for row_id, row_images, text in zip(batch["id"], batch["images"], batch["text"]):
                readable = [b for b in (row_images if row_images is not None else ()) if b is not None and image_hash.decode(b)]
                if readable and text:
                    owner.extend([len(rows)] * len(readable))
                    images.extend(readable)
                    rows.append((row_id, text))
            if not rows:
                yield pd.DataFrame({"id": [], "detail": []}, dtype=object)
                continue
            emb = np.concatenate([model.embed_images(images[i : i + size]) for i in range(0, len(images), size)])
            close = (emb @ self.image_emb.T) >= self.cfg.clip_image_threshold  # (images, bench images)
            owner = np.asarray(owner)
            # Texts are embedded only for rows with an image close to some benchmark image.
            candidates = {}
            for r in np.unique(owner[close.any(axis=1)]):
                items = np.unique(self.image_item[close[owner == r].any(axis=0)])
                candidates[int(r)] = items
            order = sorted(candidates)
            texts = [rows[r][1] for r in order]
            text_emb = (
                np.concatenate([model.embed_texts(texts[i : i + size]) for i in range(0, len(texts), size)])
                if texts
                else np.zeros((0, self.text_emb.shape[1]))
            )
            ids, details = [], []
            for r, t in zip(order, text_emb):
                items = candidates[r]
                hits = items[(self.text_emb[items] @ t) >= self.cfg.clip_text_threshold]
                if len(hits):
                    ids.append(rows[r][0])
                    details.append(detail(*self.items[int(hits.min())], "clip"))
            yield pd.DataFrame({"id": ids, "detail": details}, dtype=object)


def load_benchmarks(cfg: DecontamConfig) -> list[BenchmarkItem]:
    items = []
    for bench in cfg.benchmarks:
        loaded = load_benchmark(bench)
        log.info("benchmark %s: %d items", bench.name, len(loaded))
        items.extend(loaded)
    return items


def overlaps(df: DataFrame, cfg: DecontamConfig, items: list[BenchmarkItem] | None = None) -> DataFrame:
    """(id, detail) of kept rows that overlap a benchmark (one detail per row)."""
    items = load_benchmarks(cfg) if items is None else items
    kept = with_reject_column(df).where(is_kept())
    spark = df.sparkSession
    found = spark.createDataFrame([], "id string, detail string")
    if cfg.phash and items:
        index = _bench_index(items, cfg)
        rows = kept.select("id", F.col("images.bytes").alias("images")).where(F.size("images") > 0)
        found = found.unionByName(rows.mapInPandas(_PhashMatcher(index, cfg), "id string, detail string"))
    if cfg.clip and items:
        found = found.unionByName(_clip_overlaps(kept, items, cfg))
    # A row may match by both rules or several items: keep the smallest detail, deterministically.
    return found.groupBy("id").agg(F.min("detail").alias("detail"))


def _clip_overlaps(kept: DataFrame, items: list[BenchmarkItem], cfg: DecontamConfig) -> DataFrame:
    from curation.clip_filter import ClipConfig, load_clip

    clip_cfg = ClipConfig(model=cfg.clip_model, pretrained=cfg.clip_pretrained, batch_size=cfg.clip_batch_size)
    model = load_clip(clip_cfg)
    with_images = [(i, it) for i, it in enumerate(items) if it.images and it.text]
    images, image_item = [], []
    for i, it in with_images:
        for data in it.images:
            if image_hash.decode(data) is not None:
                images.append(data)
                image_item.append(i)
    if not images:
        return kept.sparkSession.createDataFrame([], "id string, detail string")
    image_emb = model.embed_images(images)
    text_emb = np.zeros((len(items), image_emb.shape[1]), dtype=np.float32)
    with_text = sorted(set(image_item))
    text_emb[with_text] = model.embed_texts([items[i].text for i in with_text])
    matcher = _ClipMatcher(clip_cfg, [(it.benchmark, it.item) for it in items], image_emb, np.asarray(image_item), text_emb, cfg)
    rows = kept.select("id", F.col("images.bytes").alias("images"), row_text().alias("text")).where(F.size("images") > 0)
    return rows.mapInPandas(matcher, "id string, detail string")


class Decontaminate(Step):
    """The step: kept rows overlapping a benchmark are rejected as `benchmark_overlap`. It runs
    when benchmarks are listed. Stats: benchmark items loaded, overlaps per benchmark and rule."""

    name = STEP

    @property
    def enabled(self) -> bool:
        return bool(self.config.enabled and self.config.benchmarks)

    def __call__(self, df: DataFrame) -> DataFrame:
        df = with_reject_column(df)
        items = load_benchmarks(self.config)
        self.stats["benchmark_items"] = {name: sum(1 for it in items if it.benchmark == name) for name in sorted({it.benchmark for it in items})}
        found = checkpoint(overlaps(df, self.config, items))
        groups = found.groupBy(
            F.regexp_extract("detail", r"benchmark=(\S+)", 1).alias("benchmark"), F.regexp_extract("detail", r"by=(\S+)", 1).alias("by")
        ).count()
        by = {f"{r['benchmark']} by {r['by']}": r["count"] for r in groups.collect()}
        self.stats["overlaps"] = dict(sorted(by.items()))
        verdicts = found.select("id", F.lit(REASON).alias("reason"), "detail")
        return mark(df, verdicts, STEP, on="id", rows=sum(by.values()))


def decontaminate(df: DataFrame, cfg: DecontamConfig) -> DataFrame:
    """The step as a function (`Decontaminate(cfg)(df)`)."""
    step = Decontaminate(cfg)
    return step(df) if step.enabled else with_reject_column(df)
