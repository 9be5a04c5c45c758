"""The text of a row: every text part of its messages (captions, documents, questions and
answers), in order, joined by newlines.

One definition, two engines that give the same strings (tests compare them): `row_text()` is a
Spark column (for steps over a DataFrame), `arrow_row_text()` computes it from an Arrow `messages`
column (for Python tasks that read shards themselves, without the JVM decoding every row).

Edge cases, as Spark's expressions give them: rows without messages have the empty string; parts
whose type is not "text", or whose text is null, are skipped; a row with a null message or a
message with null content has no text (null).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column
from pyspark.sql import functions as F

SEPARATOR = "\n"


def row_text() -> Column:
    """The row's text as a Spark column (computed in the JVM)."""
    texts = F.flatten(
        F.transform(
            F.coalesce(F.col("messages"), F.array()),
            lambda m: F.transform(F.filter(m["content"], lambda p: p["type"] == "text"), lambda p: p["text"]),
        )
    )
    return F.array_join(texts, SEPARATOR)


def arrow_row_text(messages: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The text of each row of an Arrow `messages` column (list<struct<role, content>>), as a
    string array, vectorised over the whole column."""
    if isinstance(messages, pa.ChunkedArray):
        messages = messages.combine_chunks()
    rows = len(messages)
    message = pc.list_flatten(messages)  # every message of every row, in order (null lists skipped)
    message_row = pc.list_parent_indices(messages).to_numpy()
    content = pc.struct_field(message, "content")  # null for a null message as well
    part = pc.list_flatten(content)
    part_row = message_row[pc.list_parent_indices(content).to_numpy()]
    text = pc.struct_field(part, "text")
    is_text = pc.and_(pc.fill_null(pc.equal(pc.struct_field(part, "type"), "text"), False), pc.is_valid(text))
    keep = is_text.to_numpy(zero_copy_only=False)
    texts, text_row = text.filter(is_text), part_row[keep]
    offsets = np.searchsorted(text_row, np.arange(rows + 1)).astype(np.int32)  # parts stay in row order
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), texts), SEPARATOR)
    no_text = np.zeros(rows, dtype=bool)  # a null message or null content: Spark's flatten gives null
    no_text[message_row[pc.is_null(content).to_numpy(zero_copy_only=False)]] = True
    return pc.if_else(pa.array(no_text), pa.scalar(None, pa.string()), joined)
