"""Sources: each format read from its path, bad items refused with a reason, nothing dropped."""

import base64
import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.sources import IngestConfig, detect_format, read_source, read_sources
from curation.steps import REJECT


def jpeg(seed: int, size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (seed * 40 % 256, 90, 160)).save(buf, format="JPEG")
    return buf.getvalue()


def rows_of(spark, path, **kw):
    out = read_source(spark, str(path), IngestConfig(**kw)).toArrow().to_pylist()
    return {json.loads(r["extra"])["origin"]: r for r in out}


def caption_of(row):
    return row["messages"][0]["content"][1]["text"]


def test_folder_with_sidecars(spark, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.jpg").write_bytes(jpeg(1))
    (tmp_path / "a.txt").write_text("first caption\n")
    (tmp_path / "sub" / "b.jpg").write_bytes(jpeg(2))
    (tmp_path / "sub" / "b.json").write_text(json.dumps({"caption": "第二个标题"}))
    (tmp_path / "c.png").write_bytes(jpeg(3))  # no caption
    (tmp_path / "d.txt").write_text("caption without image")
    assert detect_format(tmp_path) == "folder"
    rows = rows_of(spark, tmp_path)
    assert set(rows) == {"a.jpg", "sub/b.jpg", "c.png", "d.txt"}
    assert caption_of(rows["a.jpg"]) == "first caption" and rows["a.jpg"]["lang"] == "en"
    assert caption_of(rows["sub/b.jpg"]) == "第二个标题" and rows["sub/b.jpg"]["lang"] == "zh"
    assert rows["a.jpg"]["images"][0]["bytes"] == jpeg(1)
    assert rows["a.jpg"][REJECT] is None and rows["a.jpg"]["source"] == tmp_path.name
    assert rows["c.png"][REJECT]["reason"] == "caption_missing"
    assert rows["d.txt"][REJECT]["reason"] == "image_missing"


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_webdataset_groups_members_by_key_and_refuses_escapes(spark, tmp_path):
    shards = tmp_path / "wds"
    shards.mkdir()
    _tar(shards / "000.tar", [
        ("k1.jpg", jpeg(1)), ("k1.txt", b"one"),
        ("dir/k2.jpg", jpeg(2)), ("dir/k2.json", json.dumps({"text": "two"}).encode()),
        ("../../evil.txt", b"owned"), ("/abs/path.txt", b"owned"),
        ("k3.jpg", jpeg(3)), ("k3.txt", b"three"),
    ])
    with tarfile.open(shards / "001.tar", "w") as tar:
        link = tarfile.TarInfo("link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    _tar(shards / "001b.tar", [("k4.jpg", jpeg(4)), ("k4.txt", b"four")])
    assert detect_format(shards) == "webdataset"
    rows = rows_of(spark, shards)
    good = {o: caption_of(r) for o, r in rows.items() if r[REJECT] is None}
    assert good == {"000.tar#k1": "one", "000.tar#dir/k2": "two", "000.tar#k3": "three", "001b.tar#k4": "four"}
    unsafe = {o: r[REJECT]["reason"] for o, r in rows.items() if r[REJECT] is not None}
    assert unsafe == {
        "000.tar#../../evil.txt": "unsafe_tar_path",
        "000.tar#/abs/path.txt": "unsafe_tar_path",
        "001.tar#link.jpg": "unsafe_tar_path",
    }
    # nothing was written outside (or inside) the shard folder
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path.parent / "evil.txt").exists()
    assert sorted(p.name for p in shards.iterdir()) == ["000.tar", "001.tar", "001b.tar"]


def test_parquet_table_with_bytes_paths_and_hf_struct(spark, tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "p.jpg").write_bytes(jpeg(5))
    table = pa.table({
        "image": [jpeg(1), jpeg(2), None],
        "caption": ["bytes one", "bytes two", "no image"],
    })
    pq.write_table(table, tmp_path / "bytes.parquet", row_group_size=2)
    hf = pa.table({
        "image": [{"bytes": None, "path": "imgs/p.jpg"}, {"bytes": jpeg(6), "path": None}],
        "text": ["hf path", "hf bytes"],
    })
    pq.write_table(hf, tmp_path / "hf.parquet")
    rows = rows_of(spark, tmp_path / "bytes.parquet")
    assert {o: (caption_of(r) if r[REJECT] is None else r[REJECT]["reason"]) for o, r in rows.items()} == {
        "bytes.parquet#row=0": "bytes one", "bytes.parquet#row=1": "bytes two", "bytes.parquet#row=2": "image_missing",
    }
    hf_rows = rows_of(spark, tmp_path / "hf.parquet")
    assert hf_rows["hf.parquet#row=0"]["images"][0]["bytes"] == jpeg(5)
    assert hf_rows["hf.parquet#row=1"]["images"][0]["bytes"] == jpeg(6)


def test_jsonl_table_paths_inline_bytes_and_refusals(spark, tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(jpeg(1))
    lines = [
        json.dumps({"image": "imgs/a.jpg", "caption": "relative path"}).encode(),
        json.dumps({"image": "data:image/jpeg;base64," + base64.b64encode(jpeg(2)).decode(), "text": "inline"}).encode(),
        json.dumps({"image": "imgs/none.jpg", "caption": "missing"}).encode(),
        json.dumps({"image": "../outside.jpg", "caption": "escape"}).encode(),
        b"{not json",
        '{"image": "imgs/a.jpg", "caption": "caf\xe9"}'.encode("latin-1"),
    ]
    (tmp_path / "t.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    # tiny byte ranges: every line must still be read exactly once
    for split in (7, 64 * 2**20):
        rows = rows_of(spark, tmp_path / "t.jsonl", jsonl_split_bytes=split)
        outcome = [caption_of(r) if r[REJECT] is None else r[REJECT]["reason"] for _, r in sorted(rows.items(), key=lambda kv: int(kv[0].split("=")[1]))]
        assert outcome == ["relative path", "inline", "image_not_found", "unsafe_image_path", "bad_json_line", "text_not_utf8"]


def test_read_sources_names_and_formats(spark, sample_corpus):
    frame = read_sources(spark, [f"mine={sample_corpus / 'folder'}", str(sample_corpus / "table.parquet")], IngestConfig())
    sources = {r["source"] for r in frame.select("source").distinct().collect()}
    assert sources == {"mine", "table"}
    with pytest.raises(FileNotFoundError):
        detect_format(sample_corpus / "nope")


def test_unreadable_table_is_refused_not_fatal(spark, tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    rows = rows_of(spark, tmp_path / "broken.parquet")
    assert [r[REJECT]["reason"] for r in rows.values()] == ["unreadable_table"]
