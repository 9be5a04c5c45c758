"""TaskGalaxy's generation path, as a Spark source: images in, judged question-answer rows out.

Per image (the first image of each row of the given shard folders, read a row group at a time):
1. match: CLIP (curation.clip_model, the CLIP step's loading) embeds the image; the top_k leaf
   types by cosine with the types' text embeddings (computed once on the driver and shipped to
   every task) are its candidates;
2. filter: a model (the model client, JSON schema) says which candidates suit the image; names
   outside the candidates are discarded and counted (TaskGalaxy never checked them);
3. generate: one question-answer pair per kept type (JSON schema), in `language`;
4. judge: each judge says whether the type and the question suit the image and — beyond
   TaskGalaxy, whose judges never saw the answer — whether the answer is right; a judge votes yes
   when all three hold; a pair is kept with at least `votes_needed` yes votes. Every vote (with
   its mean token logprob when the endpoint returns logprobs) and every judge failure is in the
   row's extra.

What does not become a row is a refused row with its reason: undecodable_image, filter_<error>,
no_suitable_type, qa_<error>, judges_rejected, judges_unavailable (too few judges answered to
reach votes_needed). Model errors are the client's reason codes (timeout, http_429_exhausted,
schema_violation, ...); retries and re-asks happen inside the client first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation import schema
from curation.agreement import votes_detail
from curation.clip_model import ClipConfig
from curation.sources.common import ROW_SCHEMA, SourcePlan, units_frame
from curation.steps import REJECT
from synthesis.model_client.config import ClientConfig, model_configs

STEP = "taskgalaxy_generate"

FILTER_SCHEMA = {"type": "object", "properties": {"task_types": {"type": "array", "items": {"type": "string"}}},
                 "required": ["task_types"], "additionalProperties": False}
QA_SCHEMA = {"type": "object", "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
             "required": ["question", "answer"], "additionalProperties": False}
JUDGE_SCHEMA = {"type": "object", "properties": {
    "task_type_fits": {"type": "boolean"}, "question_fits": {"type": "boolean"}, "answer_correct": {"type": "boolean"}},
    "required": ["task_type_fits", "question_fits", "answer_correct"], "additionalProperties": False}


@dataclass
class GenerateConfig:
    enabled: bool = False
    images: list[str] = field(default_factory=list)  # shard folders whose rows' first image is used
    taxonomy: str = ""  # "" = the shipped seed
    clip: ClipConfig = field(default_factory=ClipConfig)
    top_k: int = 5
    llm: ClientConfig = field(default_factory=ClientConfig)  # the filter and the question writer
    judge: ClientConfig = field(default_factory=ClientConfig)  # endpoint and settings the judges share
    judge_models: list[str] = field(default_factory=lambda: ["judge-1", "judge-2", "judge-3"])
    judge_urls: list[str] = field(default_factory=list)  # per judge (same order), else judge.base_urls
    votes_needed: int = 2
    language: Literal["en", "zh"] = "en"
    max_images: int = 0  # 0: every image; else the images of the first max_images rows (file order)
    batch_size: int = 16  # images per model round
    source: str = "taskgalaxy"


def judge_configs(cfg: GenerateConfig) -> list[ClientConfig]:
    return model_configs(cfg.judge, cfg.judge_models, cfg.judge_urls, response_schema=JUDGE_SCHEMA, schema_name="judgement")


def generation_units(files: list[str], max_images: int = 0) -> list[tuple[str, int, int]]:
    """(file, row group, rows to take; -1 = all) for every row group the generation reads, from
    the files' footers: `max_images` holds for the whole job, whatever the tasks."""
    units, left = [], max_images
    for file in files:
        meta = pq.ParquetFile(file).metadata
        for group in range(meta.num_row_groups):
            if max_images and left <= 0:
                return units
            rows = meta.row_group(group).num_rows
            units.append((file, group, min(rows, left) if max_images else -1))
            left -= rows
    return units


def generation_plan(spark, files: list[str], cfg: GenerateConfig) -> SourcePlan:
    """The plan: one unit per row group of the image shards; the taxonomy's leaf texts embedded
    here, once."""
    from curation.clip_model import load_clip
    from taskgalaxy.tagging import clip_type_texts
    from taskgalaxy.taxonomy import SEED, Taxonomy

    if len(set(cfg.judge_models)) != len(cfg.judge_models):  # votes are told apart by the judge's name
        raise ValueError(f"generate.judge_models must be distinct names, got {cfg.judge_models}")
    if cfg.votes_needed > len(cfg.judge_models):
        raise ValueError(f"generate.votes_needed={cfg.votes_needed} but only {len(cfg.judge_models)} judges")
    taxonomy = Taxonomy.load(cfg.taxonomy or SEED)
    leaves = taxonomy.leaves()
    vectors = load_clip(cfg.clip).embed_texts(clip_type_texts(taxonomy))
    types = [(t.path, t.description) for t in leaves]
    units = units_frame(spark, generation_units(files, cfg.max_images), "file string, row_group int, take int",
                        spark.sparkContext.defaultParallelism * 2)
    return SourcePlan(units, _Generator(cfg, types, vectors.astype(np.float32)))


def judge_tally(frame) -> dict:
    """The judges' agreement over every pair they judged in a job's marked frame: the pairs they
    passed (votes in extra, whatever a later step did to the row) and the pairs they refused (votes
    in the refusal's detail). Ballots are grouped and counted in Spark, so only their few distinct
    patterns reach the driver."""
    from pyspark.sql import functions as F

    from curation.agreement import ballot_from_detail, judge_agreement

    votes = F.from_json(F.get_json_object("extra", "$.votes"), "array<struct<judge:string,vote:boolean,error:string>>")
    said = F.transform(votes, lambda v: F.concat(v["judge"], F.lit(":"), F.when(v["vote"].isNull(), F.coalesce(v["error"], F.lit("error")))
                                                  .when(v["vote"], F.lit("yes")).otherwise(F.lit("no"))))
    passed = frame.where(votes.isNotNull()).select(F.concat(F.lit("votes="), F.concat_ws(",", said)).alias("ballot"))
    refused = frame.where((F.col(REJECT)["step"] == STEP) & F.col(REJECT)["detail"].startswith("votes=")).select(
        F.col(REJECT)["detail"].alias("ballot"))
    counted = passed.unionByName(refused).groupBy("ballot").count().orderBy("ballot").collect()
    return judge_agreement([ballot_from_detail(r["ballot"]) for r in counted], [r["count"] for r in counted])


class _Generator:
    def __init__(self, cfg: GenerateConfig, types: list[tuple[str, str]], vectors: np.ndarray):
        self.cfg, self.types, self.vectors = cfg, types, vectors

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from curation.clip_model import load_clip

        clip = load_clip(self.cfg.clip)
        for batch in batches:
            for file, group, take in zip(*(batch.column(c).to_pylist() for c in ("file", "row_group", "take"))):
                table = pq.ParquetFile(file).read_row_group(group, columns=["id", "images"])
                if take >= 0:
                    table = table.slice(0, take)
                items = [(i, imgs[0]["bytes"]) for i, imgs in zip(table.column("id").to_pylist(),
                                                                  table.column("images").to_pylist()) if imgs]
                del table  # one row group's images at a time (our shards' row groups are bounded by bytes)
                for start in range(0, len(items), self.cfg.batch_size):
                    rows = self.rows(clip, items[start:start + self.cfg.batch_size])
                    yield pa.RecordBatch.from_pylist(rows, schema=ROW_SCHEMA)

    # --- one round of images ---------------------------------------------------------------------

    def rows(self, clip, items: list[tuple[str, bytes]]) -> list[dict]:
        from synthesis.model_client import client_for

        out: list[dict] = []
        decoded = []
        for image_id, data in items:
            try:
                decoded.append((image_id, data, clip.embed_images([data])[0]))
            except Exception as exc:  # an image CLIP cannot read
                out.append(self.refused(image_id, None, "undecodable_image", f"{type(exc).__name__}: {exc}"))
        llm = client_for(dataclasses.replace(self.cfg.llm, response_schema=FILTER_SCHEMA, schema_name="task_types"))
        candidates = {image_id: self.candidates(vector) for image_id, _, vector in decoded}
        filtered = llm.chat([self.filter_request(image_id, data, candidates[image_id]) for image_id, data, _ in decoded])
        pairs = []  # (image id, image bytes, type path, description, extra)
        for (image_id, data, _), done in zip(decoded, filtered):
            if not done.ok:
                out.append(self.refused(image_id, None, f"filter_{done.error}", done.detail or ""))
                continue
            named = [str(n) for n in done.parsed[0]["task_types"]]
            allowed = {p for p, _ in candidates[image_id]}
            kept = [n for n in dict.fromkeys(named) if n in allowed]
            discarded = [n for n in named if n not in allowed]
            if not kept:
                out.append(self.refused(image_id, None, "no_suitable_type",
                                        f"kept none of {len(allowed)} candidates; discarded {discarded}"))
                continue
            extra = {"origin": image_id, "candidates": [p for p, _ in candidates[image_id]], "discarded_labels": discarded}
            descriptions = dict(candidates[image_id])
            pairs += [(image_id, data, path, descriptions[path], extra) for path in kept]
        writer = client_for(dataclasses.replace(self.cfg.llm, response_schema=QA_SCHEMA, schema_name="qa"))
        written = writer.chat([self.qa_request(i, d, path, desc) for i, d, path, desc, _ in pairs])
        judged = []
        for pair, done in zip(pairs, written):
            if done.ok:
                judged.append((pair, done.parsed[0]))
            else:
                out.append(self.refused(pair[0], pair[2], f"qa_{done.error}", done.detail or ""))
        votes = [[] for _ in judged]
        for judge_cfg in judge_configs(self.cfg):
            judge = client_for(judge_cfg)
            answers = judge.chat([self.judge_request(judge_cfg.model, pair, qa) for pair, qa in judged])
            for k, done in enumerate(answers):
                votes[k].append(_vote(judge_cfg.model, done))
        for ((image_id, data, path, _, extra), qa), cast in zip(judged, votes):
            yes = sum(1 for v in cast if v.get("vote") is True)
            answered = sum(1 for v in cast if "vote" in v)
            if yes >= self.cfg.votes_needed:
                out.append(self.row(image_id, data, path, qa, {**extra, "votes": cast}))
            else:
                reason = "judges_unavailable" if answered < self.cfg.votes_needed else "judges_rejected"
                out.append(self.refused(image_id, path, reason, votes_detail(cast)))
        return out

    def candidates(self, vector: np.ndarray) -> list[tuple[str, str]]:
        scores = self.vectors @ vector
        order = np.argsort(-scores, kind="stable")[: self.cfg.top_k]
        return [self.types[i] for i in order]

    def filter_request(self, image_id: str, data: bytes, candidates: list[tuple[str, str]]):
        from synthesis.model_client.records import ChatRequest

        listed = "\n".join(f"- {path}: {desc}" for path, desc in candidates)
        text = ("Here are candidate task types for questions about this image:\n" + listed + "\n"
                "Which of them can really be asked about this image? Answer as JSON "
                '{"task_types": [...]} with names copied exactly from the list; an empty list if none fits.')
        return ChatRequest(f"filter:{image_id}", [{"role": "user", "content": [
            {"type": "image", "index": 0}, {"type": "text", "text": text}]}], images=[data])

    def qa_request(self, image_id: str, data: bytes, path: str, description: str):
        from synthesis.model_client.records import ChatRequest

        language = "Chinese" if self.cfg.language == "zh" else "English"
        text = (f"Task type: {path} ({description}).\nWrite one question of this task type about this image, "
                f"and its correct answer, in {language}. Answer as JSON "
                '{"question": ..., "answer": ...}.')
        return ChatRequest(f"qa:{image_id}:{path}", [{"role": "user", "content": [
            {"type": "image", "index": 0}, {"type": "text", "text": text}]}], images=[data])

    def judge_request(self, model: str, pair, qa: dict):
        from synthesis.model_client.records import ChatRequest

        image_id, data, path, description, _ = pair
        text = (f"Task type: {path} ({description})\nQuestion: {qa['question']}\nAnswer: {qa['answer']}\n"
                "Judge three things about this image: does the task type suit it, does the question suit it, and "
                'is the answer right? Answer as JSON {"task_type_fits": true|false, "question_fits": true|false, '
                '"answer_correct": true|false}.')
        return ChatRequest(f"judge:{model}:{image_id}:{path}", [{"role": "user", "content": [
            {"type": "image", "index": 0}, {"type": "text", "text": text}]}], images=[data])

    def row(self, image_id: str, data: bytes, path: str, qa: dict, extra: dict) -> dict:
        m = schema.message
        row = schema.make_row(
            self.cfg.source, "vqa", [m("user", schema.image_part(0), qa["question"]), m("assistant", qa["answer"])],
            [schema.image_entry(data)], task_types=[path], lang=self.cfg.language,
            extra={**extra, "generator": self.cfg.llm.model, "judges": list(self.cfg.judge_models)},
        )
        row[REJECT] = None
        return row

    def refused(self, image_id: str, path: str | None, reason: str, detail: str) -> dict:
        row = schema.make_row(self.cfg.source, "vqa", [], id=schema.raw_id("taskgalaxy", image_id, path or ""),
                              task_types=[path] if path else [], extra={"origin": image_id})
        row[REJECT] = {"step": STEP, "reason": reason, "detail": detail[:500]}
        return row


def _vote(model: str, done) -> dict:
    if not done.ok:
        return {"judge": model, "error": done.error}
    verdict = done.parsed[0]
    vote = {"judge": model, "vote": all(bool(verdict[k]) for k in ("task_type_fits", "question_fits", "answer_correct")),
            **{k: bool(verdict[k]) for k in ("task_type_fits", "question_fits", "answer_correct")}}
    if done.logprobs and done.logprobs[0]:
        vote["mean_logprob"] = round(float(np.mean([t["logprob"] for t in done.logprobs[0]])), 4)
    return vote
