"""The runner: steps run once and are reused by key, a changed setting recomputes exactly the steps
after it, row steps give the same marks inside the materialising pass as on a frame, and every
step's record adds up with the funnel."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image
from pyspark.sql import functions as F

from curation import schema
from curation.runner import run_steps
from curation.spark import rows_frame
from curation.steps import REJECT, Step, reject_where
from curation.validate import Validate, ValidateConfig
from curation.workdir import WorkFolder


@dataclass
class EveryNth:
    n: int = 3
    enabled: bool = True


CALLS: list[str] = []


class DropEveryNth(Step):
    """Rejects every nth row by origin number (and counts its calls)."""

    name = "nth"

    def __call__(self, df):
        CALLS.append(f"{self.name}:{self.config.n}")
        number = F.regexp_extract(F.get_json_object("extra", "$.origin"), r"(\d+)", 1).cast("int")
        self.stats["n"] = self.config.n
        return reject_where(df, (number + 1) % self.config.n == 0, self.name, f"every_{self.config.n}th")


class DropEveryNthAgain(DropEveryNth):
    name = "nth_again"


def sample_rows(n=40):
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (30 + i % 5, 32), (i, 10, 10)).save(buf, format="PNG")
        data = buf.getvalue() if i % 11 else b"broken"  # a few images that do not decode
        out.append(schema.caption_row("s", data, f"row {i}", extra={"origin": f"o{i}"}))
    return out


def marks(result):
    return sorted((r["id"], r[REJECT]["step"] if r[REJECT] else None) for r in result.frame.select("id", REJECT).collect())


def test_steps_are_reused_by_key_and_a_changed_setting_recomputes_what_follows(spark, tmp_path):
    frame = rows_frame(spark, sample_rows())
    work = WorkFolder(tmp_path)
    quiet = {"log": lambda _: None}

    def run(first_n, second_n):
        steps = [Validate(ValidateConfig()), DropEveryNth(EveryNth(first_n)), DropEveryNthAgain(EveryNth(second_n))]
        return run_steps(spark, frame, steps, work, "input-1", sources=["ingest"], **quiet)

    CALLS.clear()
    first = run(3, 5)
    assert CALLS == ["nth:3", "nth_again:5"] and not first.base["reused"]
    records = {r["step"]: r for r in first.records}
    assert [r["step"] for r in first.records] == ["validate", "nth", "nth_again"]
    assert records["validate"]["stats"]["refused"] == 4  # rows 0, 11, 22, 33: broken images
    for before, after in zip(first.records, first.records[1:]):
        assert after["rows_in"] == before["rows_out"]
    assert records["nth"]["stats"] == {"n": 3}

    CALLS.clear()
    again = run(3, 5)  # everything found by its key
    assert CALLS == [] and again.base["reused"] and all(r["reused"] for r in again.records)
    assert marks(again) == marks(first) and again.records[-1]["stats"] == first.records[-1]["stats"]

    CALLS.clear()
    changed = run(3, 7)  # only the last step's setting changed: only it runs again
    assert CALLS == ["nth_again:7"]
    assert [r["reused"] for r in changed.records] == [True, True, False]

    CALLS.clear()
    run(4, 7)  # an earlier step's setting: it and every step after it run again
    assert CALLS == ["nth:4", "nth_again:7"]


def test_validation_inside_the_materialising_pass_marks_what_it_marks_on_a_frame(spark, tmp_path):
    frame = rows_frame(spark, sample_rows())
    fused = run_steps(spark, frame, [Validate(ValidateConfig())], WorkFolder(tmp_path / "a"), "k", log=lambda _: None)
    assert fused.records[0]["stats"]["in_pass"]
    # the same step after another one: it runs as a frame step
    nothing = DropEveryNth(EveryNth(1000))
    separate = run_steps(spark, frame, [nothing, Validate(ValidateConfig())], WorkFolder(tmp_path / "b"), "k", log=lambda _: None)
    assert "in_pass" not in separate.records[1]["stats"]
    assert marks(fused) == marks(separate)
    assert fused.records[0]["stats"]["refused_by_reason"] == separate.records[1]["stats"]["refused_by_reason"]
    # both recorded every good image's pHash for the image dedup step
    for work in (WorkFolder(tmp_path / "a"), WorkFolder(tmp_path / "b")):
        (record,) = work.find_all("image_phash")
        assert record["rows"] >= 36 - 1  # 36 good images (identical ones may share a hash)
