"""Difficulty by pass rate: each question is answered `samples` times by each of the configured
models, the answers are matched against the row's reference answer, and rows the models already
get right too often are refused as `too_easy` (optionally, rows nobody gets right as `too_hard`).

    difficulty.enabled=true difficulty.client.base_urls=[http://host:8000/v1] \
        difficulty.models=[qwen2.5-vl-7b,internvl3-8b] difficulty.samples=4 difficulty.max_pass_rate=0.75

Which rows: kept rows of `kinds` with one user turn and a reference answer (the `answer` column,
else the assistant turn's text); conversations of several turns stay unscored (`multi_turn`). How
answers match: `synthesis.reasoning.answers_match`, the same rule the reasoning data and the RL
rewards use, by the row's `extra.answer_kind` when it has one, else inferred from the reference (a
number, an option letter, or a short text). A reference longer than `max_reference_words` is an
open answer: string matching says nothing about it, so it is graded by `grader_model` when one is
set and left unscored otherwise.

Every scored row keeps its result in extra.difficulty: pass rate, correct and asked samples, and
per model its counts or the client's error. A row whose models all failed stays unscored (kept, the
reason in extra.difficulty.unscored); nothing is refused for an outage. The models' results are
persisted in the job's work folder keyed by everything but the thresholds, so a new
`max_pass_rate` refilters without asking the models again.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from curation.spark import checkpoint, small_side
from curation.steps import ROW, Step, is_kept, reject_where, with_reject_column
from synthesis.model_client.config import ClientConfig, model_configs

STEP = "difficulty"
THRESHOLDS = ("max_pass_rate", "min_pass_rate")  # applied after the persisted answers: not in its key
# Per row asked about: samples judged, samples right, why it stayed unscored, the models' errors
# ("model: reason"), and its extra with the `difficulty` record.
RESULTS = pa.schema([(ROW, pa.int64()), ("asked", pa.int32()), ("correct", pa.int32()), ("unscored", pa.string()),
                     ("errors", pa.list_(pa.string())), ("extra", pa.string())])
RESULTS_DDL = f"{ROW} long, asked int, correct int, unscored string, errors array<string>, extra string"
GRADE_SCHEMA = {"type": "object", "properties": {"same": {"type": "boolean"}}, "required": ["same"],
                "additionalProperties": False}
SYSTEM = ("Answer the question about the image(s). Reply with the final answer only (a number, an option letter "
          "or a short phrase) inside \\boxed{}.")


@dataclass
class DifficultyConfig:
    enabled: bool = False
    client: ClientConfig = field(default_factory=ClientConfig)  # endpoint and settings the models share
    models: list[str] = field(default_factory=lambda: ["solver"])  # M models, each asked `samples` times
    model_urls: list[str] = field(default_factory=list)  # per model (same order), else client.base_urls
    samples: int = 4  # N answers per model and question
    temperature: float = 1.0
    max_pass_rate: float = 0.75  # above it: too_easy
    min_pass_rate: float = 0.0  # below it: too_hard (0: nothing is too hard)
    kinds: list[str] = field(default_factory=lambda: ["vqa", "rl"])
    max_reference_words: int = 8  # longer references are open answers
    grader_model: str = ""  # grades open answers against the reference (same endpoint); "": unscored
    system: str = SYSTEM
    batch_rows: int = 32  # rows asked per round (every model, every sample)


def reference_of(row: dict) -> str | None:
    """The row's reference answer: its `answer`, else the text of its last assistant turn."""
    if row.get("answer"):
        return row["answer"]
    turns = [m for m in row.get("messages") or () if m and m.get("role") == "assistant"]
    if not turns:
        return None
    text = " ".join(p.get("text") or "" for p in turns[-1].get("content") or () if p.get("type") == "text").strip()
    return text or None


def answer_kind(reference: str, extra: dict) -> str:
    """extra.answer_kind when the row says; else a number, an option letter, or text."""
    from synthesis.reasoning.answers import _decimal, unboxed

    if extra.get("answer_kind") in ("number", "choice", "text"):
        return extra["answer_kind"]
    bare = unboxed(reference)
    if _decimal(bare) is not None:
        return "number"
    if re.fullmatch(r"\(?[A-Ha-h]\)?[.:]?", bare):
        return "choice"
    return "text"


def is_open(reference: str, kind: str, max_words: int) -> bool:
    return kind == "text" and len(reference.split()) > max_words


class RateDifficulty(Step):
    name = STEP
    writes = ("extra",)

    def preflight(self) -> None:
        from synthesis.model_client.config import check_config

        cfg = self.config
        if not cfg.models or cfg.samples < 1:
            raise ValueError("difficulty: set difficulty.models=[...] and difficulty.samples >= 1")
        if not 0.0 <= cfg.min_pass_rate <= cfg.max_pass_rate <= 1.0:
            raise ValueError("difficulty: need 0 <= min_pass_rate <= max_pass_rate <= 1")
        for c in model_configs(cfg.client, cfg.models, cfg.model_urls):
            check_config(c)

    def __call__(self, df: DataFrame) -> DataFrame:
        cfg = self.config
        self.preflight()
        df = with_reject_column(df)
        todo = df.where(is_kept() & F.col("kind").isin(list(cfg.kinds))).select(
            ROW, "id", "messages", "images", "answer", "extra")
        key_config = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in THRESHOLDS}
        work = self.context.work
        if work is not None:
            from curation.workdir import hash_key

            results, reused = work.persisted(df.sparkSession, "difficulty_answers", hash_key(self.context.input_key, key_config),
                                             lambda: todo.mapInArrow(_Rater(cfg), RESULTS_DDL))
        else:
            results, reused = checkpoint(todo.mapInArrow(_Rater(cfg), RESULTS_DDL)), False
        rate = F.try_divide(F.col("correct"), F.col("asked"))  # null for rows not scored
        too_easy = (F.col("asked") > 0) & (rate > F.lit(cfg.max_pass_rate))
        too_hard = (F.col("asked") > 0) & (rate < F.lit(cfg.min_pass_rate))
        verdicts = checkpoint(results.select(
            F.col(ROW).alias("_d_row"), F.col("extra").alias("_d_extra"),
            F.when(too_easy, F.lit("too_easy")).when(too_hard, F.lit("too_hard")).alias("_d_reason"),
            F.format_string("pass rate %.3f (%d of %d answers right)", rate, F.col("correct"), F.col("asked")).alias("_d_detail"),
        ))
        self.stats.update(_stats(results, verdicts, reused))
        joined = df.join(small_side(verdicts, self.stats["rows_asked_about"], row_bytes=512), F.col(ROW) == F.col("_d_row"), "left")
        joined = joined.withColumn("extra", F.coalesce(F.col("_d_extra"), F.col("extra")))
        marked = reject_where(joined, F.col("_d_reason").isNotNull(), STEP, F.col("_d_reason"), F.col("_d_detail"))
        return marked.drop("_d_row", "_d_extra", "_d_reason", "_d_detail")


def _stats(results: DataFrame, verdicts: DataFrame, reused: bool) -> dict:
    """Counts over the results, aggregated in Spark: no row's extra comes to the driver."""
    rate = F.try_divide(F.col("correct"), F.col("asked"))  # null for rows not scored
    totals = results.agg(F.count("*").alias("rows"), F.count(F.when(F.col("asked") > 0, 1)).alias("scored"),
                         F.avg(F.when(F.col("asked") > 0, rate)).alias("mean")).first()
    bucket = F.least(F.floor(rate * 4), F.lit(3)).cast("int")
    hist = {r["b"]: r["count"] for r in results.where(F.col("asked") > 0).groupBy(bucket.alias("b")).count().collect()}
    unscored = {r["unscored"]: r["count"] for r in results.where(F.col("unscored").isNotNull()).groupBy("unscored").count().collect()}
    errors = {r["e"]: r["count"] for r in results.select(F.explode("errors").alias("e")).groupBy("e").count().collect()}
    reasons = {r["_d_reason"]: r["count"] for r in verdicts.where(F.col("_d_reason").isNotNull()).groupBy("_d_reason").count().collect()}
    return {
        "rows_asked_about": totals["rows"], "scored": totals["scored"], "answers_reused": reused,
        "unscored": dict(sorted(unscored.items())), "model_errors": dict(sorted(errors.items())),
        "too_easy": reasons.get("too_easy", 0), "too_hard": reasons.get("too_hard", 0),
        "mean_pass_rate": None if totals["mean"] is None else round(totals["mean"], 4),
        "pass_rate_histogram": {f"{b / 4:.2f}-{(b + 1) / 4:.2f}": hist.get(b, 0) for b in range(4)},
    }


class _Rater:
    """mapInArrow: rows -> RESULTS (row key, answers judged and right, extra with `difficulty`)."""

    def __init__(self, cfg: DifficultyConfig):
        self.cfg = cfg

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            rows = batch.to_pylist()
            for start in range(0, len(rows), max(1, self.cfg.batch_rows)):
                yield pa.RecordBatch.from_pylist(self.rate(rows[start:start + self.cfg.batch_rows]), schema=RESULTS)

    def rate(self, rows: list[dict]) -> list[dict]:
        from synthesis.model_client import client_for
        from synthesis.reasoning.answers import answers_match, unboxed

        cfg = self.cfg
        facts = [self.facts(row) for row in rows]
        asked = [k for k, f in enumerate(facts) if f["how"] in ("match", "grade")]
        replies: dict[str, list] = {}  # model -> its completion per asked row
        for model_cfg in model_configs(cfg.client, cfg.models, cfg.model_urls, response_schema=None):
            replies[model_cfg.model] = client_for(model_cfg).chat([self.request(rows[k]) for k in asked])
        graded = self.grade(asked, facts, replies) if any(facts[k]["how"] == "grade" for k in asked) else {}
        where = {k: j for j, k in enumerate(asked)}  # row -> its place among the asked rows
        out = []
        for k, (row, f) in enumerate(zip(rows, facts)):
            record, total, right, errors = {}, 0, 0, []
            if f["how"] not in ("match", "grade"):
                record["unscored"] = f["how"]
            else:
                j = where[k]
                record.update({"models": {}, "answer_kind": "open" if f["how"] == "grade" else f["kind"]})
                for model, completions in replies.items():
                    done = completions[j]
                    if not done.ok:
                        record["models"][model] = {"error": done.error}
                        errors.append(f"{model}: {done.error}")
                        continue
                    if f["how"] == "grade":
                        marks = graded.get((model, k), [])
                    else:
                        marks = [answers_match(unboxed(text), f["reference"], f["kind"]) for text in done.texts]
                    record["models"][model] = {"asked": len(marks), "correct": sum(marks)}
                    total, right = total + len(marks), right + sum(marks)
                if total:
                    record.update({"pass_rate": round(right / total, 4), "asked": total, "correct": right})
                else:
                    record["unscored"] = "model_errors"
            extra = {**f["extra"], "difficulty": record}
            out.append({ROW: row[ROW], "asked": total, "correct": right, "unscored": record.get("unscored"),
                        "errors": errors, "extra": json.dumps(extra, ensure_ascii=False, sort_keys=True)})
        return out

    def facts(self, row: dict) -> dict:
        """What a row gives to score against, and how: `match`, `grade`, or why it cannot be
        scored (no_question, multi_turn, no_reference, open_answer)."""
        from synthesis.reasoning.answers import unboxed

        extra = json.loads(row.get("extra") or "{}")
        users = sum(1 for m in row.get("messages") or () if m and m.get("role") == "user")
        if users != 1:  # a conversation's last answer depends on the earlier answers: not asked
            return {"extra": extra, "how": "no_question" if users == 0 else "multi_turn"}
        reference = reference_of(row)
        if reference is None:
            return {"extra": extra, "how": "no_reference"}
        kind = answer_kind(reference, extra)
        how = "match"
        if is_open(unboxed(reference), kind, self.cfg.max_reference_words):
            how = "grade" if self.cfg.grader_model else "open_answer"
        return {"extra": extra, "reference": reference, "kind": kind, "how": how}

    def request(self, row: dict):
        from synthesis.model_client.records import ChatRequest

        turns = [{"role": m["role"], "content": m["content"]} for m in row["messages"] if m["role"] in ("system", "user")]
        system = [{"role": "system", "content": [{"type": "text", "text": self.cfg.system}]}] if self.cfg.system else []
        images = [image["bytes"] for image in row.get("images") or ()]
        return ChatRequest(f"difficulty:{row['id']}:{row[ROW]}", system + turns, images=images,
                           overrides={"n": self.cfg.samples, "temperature": self.cfg.temperature})

    def grade(self, asked: list[int], facts: list[dict], replies: dict) -> dict:
        """{(model, row index): [right?] per graded sample} for the open answers, by the grader
        model (text only). A sample the grader could not grade is left out, not counted wrong."""
        from synthesis.model_client import client_for
        from synthesis.model_client.records import ChatRequest
        from synthesis.reasoning.answers import unboxed

        cfg = self.cfg
        grader_cfg = model_configs(cfg.client, [cfg.grader_model], [], response_schema=GRADE_SCHEMA,
                                   schema_name="grade", temperature=0.0, n=1)[0]
        keys, requests = [], []
        for j, k in enumerate(asked):
            if facts[k]["how"] != "grade":
                continue
            for model, completions in replies.items():
                done = completions[j]
                for s, text in enumerate(done.texts if done.ok else ()):
                    prompt = (f"Reference answer: {facts[k]['reference']}\nCandidate answer: {unboxed(text)}\n"
                              'Does the candidate give the same answer as the reference? Answer as JSON {"same": true|false}.')
                    keys.append((model, k))
                    requests.append(ChatRequest(f"grade:{model}:{k}:{s}", [{"role": "user", "content": [{"type": "text", "text": prompt}]}]))
        out: dict = {}
        for key, done in zip(keys, client_for(grader_cfg).chat(requests)):
            if done.ok:
                out.setdefault(key, []).append(bool(done.parsed[0]["same"]))
        return out
