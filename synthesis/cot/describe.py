"""What a reasoning folder holds, for its card: task kinds, languages, modes, auto_think's
decisions, preference corruptions, and reply lengths (characters of the assistant turns, as a
histogram: reasoning length is what the cold start is about)."""

from __future__ import annotations

import json

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from curation.steps import is_kept

LENGTH_BUCKETS = (0, 100, 200, 400, 800, 1600, 3200, 6400)


def describe(frame: DataFrame) -> dict:
    """Counts over the kept rows of a marked frame (narrow columns only), and how many samples
    each check passed."""
    refusals = {
        r["reason"]: r["count"]
        for r in frame.where(~is_kept()).groupBy(F.col("_reject.reason").alias("reason")).count().collect()
    }
    kept = frame.where(is_kept())
    extra = F.col("extra")
    reply = F.array_join(
        F.flatten(F.transform(F.filter("messages", lambda m: m["role"] == "assistant"),
                              lambda m: F.transform(F.filter(m["content"], lambda p: p["type"] == "text"), lambda p: p["text"]))),
        "\n",
    )
    narrow = kept.select(
        F.coalesce(F.get_json_object(extra, "$.kind"), F.lit("?")).alias("task"),
        F.coalesce("lang", F.lit("?")).alias("lang"),
        F.coalesce("think_mode", F.lit("none")).alias("mode"),
        F.get_json_object(extra, "$.decision").alias("decision"),
        F.get_json_object(extra, "$.corruption").alias("corruption"),
        F.get_json_object(extra, "$.teacher").alias("teacher"),
        F.length(reply).alias("reply_chars"),
    )
    counts = narrow.groupBy("task", "lang", "mode", "decision", "corruption", F.col("teacher").isNotNull().alias("from_teacher")).count().collect()
    out: dict = {"rows": sum(r["count"] for r in counts)}
    if refusals:
        out["refused_by_reason"] = dict(sorted(refusals.items()))
    checked = out["rows"] + sum(refusals.values()) - refusals.get("generator_error", 0)  # every check ran
    if checked:
        out["answer_check_pass_rate"] = round(1 - refusals.get("answer_check_failed", 0) / checked, 4)
    for name in ("task", "lang", "mode", "decision", "corruption", "from_teacher"):
        tally: dict[str, int] = {}
        for r in counts:
            if r[name] is not None:
                tally[str(r[name])] = tally.get(str(r[name]), 0) + r["count"]
        if tally:
            out[name] = dict(sorted(tally.items()))
    lengths = narrow.select("reply_chars").where(F.col("reply_chars") > 0)
    bucket = F.lit(LENGTH_BUCKETS[-1])
    for low, high in reversed(list(zip(LENGTH_BUCKETS, LENGTH_BUCKETS[1:]))):
        bucket = F.when(F.col("reply_chars") < high, F.lit(low)).otherwise(bucket)
    hist = {r["b"]: r["count"] for r in lengths.groupBy(bucket.alias("b")).count().collect()}
    if hist:
        out["reply_chars_histogram"] = {f"{b}+": hist[b] for b in sorted(hist)}
        quantiles = lengths.approxQuantile("reply_chars", [0.1, 0.5, 0.9], 0.0)
        out["reply_chars"] = {"p10": quantiles[0], "p50": quantiles[1], "p90": quantiles[2]}
    return json.loads(json.dumps(out))
