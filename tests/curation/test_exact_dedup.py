import io
import json

from PIL import Image

from curation import schema
from curation.exact_dedup import ExactDedupConfig, exact_dedup
from curation.steps import REJECT, reject_where, with_reject_column
from pyspark.sql import functions as F


def png(v):
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (v, v, v)).save(buf, format="PNG")
    return buf.getvalue()


def test_same_content_kept_once_by_source_then_origin(keyed_frame):
    rows = [
        schema.caption_row("b", png(1), "same", extra={"origin": "b1"}),
        schema.caption_row("a", png(1), "same", extra={"origin": "a2"}),
        schema.caption_row("a", png(1), "same", extra={"origin": "a1"}),  # first by (source, origin)
        schema.caption_row("a", png(2), "same", extra={"origin": "a3"}),  # other image: distinct
        schema.caption_row("a", png(3), "x", extra={"origin": "z0"}),
        schema.caption_row("a", png(3), "x", extra={"origin": "z1"}),
    ]
    frame = with_reject_column(keyed_frame(rows, files=3))
    # z0 was refused earlier: its twin z1 is then the one kept, not rejected as its duplicate
    frame = reject_where(frame, F.get_json_object("extra", "$.origin") == "z0", "earlier", "why")
    out = {json.loads(r["extra"])["origin"]: r[REJECT] for r in exact_dedup(frame, ExactDedupConfig()).toArrow().to_pylist()}
    assert out["a1"] is None and out["a3"] is None and out["z1"] is None
    assert out["a2"]["reason"] == out["b1"]["reason"] == "exact_duplicate"
    assert out["a2"]["detail"] == "same content as a:a1"
    assert out["z0"]["step"] == "earlier"
