"""chat_frame: model calls over a Spark DataFrame, in mapInPandas, one client per Python worker.

    schema = "id string, caption string, _reject struct<step:string,reason:string,detail:string>"
    out = chat_frame(df, cfg, to_request, from_completion, schema)

  * to_request(row: dict) -> ChatRequest: one request per input row (row values as plain Python:
    lists, dicts, bytes). If it raises, the row's completion is a `bad_request` failure carrying
    the exception, so a malformed row never ends the job.
  * from_completion(row: dict, completion: Completion) -> list[dict]: the output rows for that
    input row, with the keys of `schema` (missing keys are null). A failed completion
    (completion.error is not None) must still give a row so the caller's funnel adds up
    (in = kept + rejected): the convention is the input row's id with `_reject` set to
    `reject_of(completion, step)`, the {step, reason, detail} struct of curation.steps' `_reject`
    column; the caller decides the rest of the shape. Returning [] drops the row silently: don't.

Rows are sent in chunks (a few times the client's concurrency or batch size), so a worker keeps
the endpoints busy without holding a whole partition's replies. The client (and an in-process
model) is built once per Python worker by `client_for` and reused by every task that worker runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from synthesis.model_client.client import client_for
from synthesis.model_client.config import ClientConfig, check_config
from synthesis.model_client.records import BAD_REQUEST, ChatRequest, Completion

CHUNK_PER_SLOT = 4  # rows in flight per request slot (concurrency) or per batch row


def reject_of(completion: Completion, step: str) -> dict:
    """The `_reject` struct (curation.steps.REJECT_TYPE) for a failed completion."""
    return {"step": step, "reason": completion.error, "detail": completion.detail}


def chat_frame(
    df,
    cfg: ClientConfig,
    to_request: Callable[[dict], ChatRequest],
    from_completion: Callable[[dict, Completion], list[dict]],
    schema,
):
    """mapInPandas over `df`: each row -> to_request -> the model -> from_completion -> rows of `schema`
    (a StructType or a DDL string)."""
    check_config(cfg)  # on the driver: a misconfigured client stops the job before any task runs
    struct = df.sparkSession.createDataFrame([], schema).schema if isinstance(schema, str) else schema
    columns = struct.fieldNames()
    slots = cfg.concurrency if cfg.backend == "openai" else cfg.batch_size
    chunk = max(1, slots * CHUNK_PER_SLOT)

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        client = client_for(cfg)
        for frame in batches:
            rows = [plain(r) for r in frame.to_dict("records")]
            for start in range(0, len(rows), chunk):
                part = rows[start : start + chunk]
                out: list[dict] = []
                for row, completion in zip(part, _complete(client, part, to_request)):
                    out.extend(from_completion(row, completion))
                yield pd.DataFrame.from_records(out, columns=columns) if out else pd.DataFrame({c: [] for c in columns})

    return df.mapInPandas(run, struct)


def _complete(client, rows: list[dict], to_request) -> list[Completion]:
    completions: list[Completion | None] = [None] * len(rows)
    requests, where = [], []
    for i, row in enumerate(rows):
        try:
            requests.append(to_request(row))
            where.append(i)
        except Exception as exc:  # noqa: BLE001 - a row that cannot become a request is rejected, not fatal
            completions[i] = Completion(
                str(row.get("id", i)), error=BAD_REQUEST, detail=f"to_request: {type(exc).__name__}: {exc}"
            )
    for i, completion in zip(where, client.chat(requests)):
        completions[i] = completion
    return completions  # type: ignore[return-value]


def plain(value: Any) -> Any:
    """pandas/numpy values from Arrow (arrays of structs, numpy scalars) -> plain Python values."""
    import numpy as np

    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):  # NaN from a null numeric cell
        return None
    return value
