"""ShardReader: manifests, rank-disjoint coverage, weighted mixing, seeded shuffle, exact resume."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from keye_helpers import write_shard_folder

from curation import schema
from curation.schema.manifest import OutputFolderError
from training.data import RowCoord, ShardReader


def write_folder(folder: Path, name: str, shard_rows: list[int], row_group_rows: int = 4) -> list[list[dict]]:
    """A complete output folder of text rows; returns the rows per shard as written."""
    m = schema.message
    shards, n = [], 0
    for rows in shard_rows:
        shards.append([
            schema.make_row(name, "text", [m("user", f"{name} question {n + i}"), m("assistant", "answer " * (i % 5))])
            for i in range(rows)
        ])
        n += rows
    write_shard_folder(folder, shards, row_group_rows)
    return shards


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two sources: `a` with uneven shards (one empty, as the writer makes when nothing is kept)
    and row groups that do not divide the shards; `b` small, so it cycles through many epochs."""
    root = tmp_path_factory.mktemp("shards")
    a = write_folder(root / "a", "a", [23, 0, 17, 9], row_group_rows=4)
    b = write_folder(root / "b", "b", [7, 6], row_group_rows=3)
    return {"a": (root / "a", a), "b": (root / "b", b)}


def ids_by_coord(folders) -> dict[tuple[int, int, int], str]:
    """(source, shard, row) -> id, read straight from the Parquet files (independent of the reader)."""
    out = {}
    for source, key in enumerate(("a", "b")):
        folder = folders[key][0]
        for entry in json.loads((folder / "_manifest.json").read_text())["shards"]:
            shard = int(entry["path"][5:10])
            for row, id_ in enumerate(pq.read_table(folder / entry["path"], columns=["id"]).column("id").to_pylist()):
                out[(source, shard, row)] = id_
    return out


def take(reader: ShardReader, n: int | None = None) -> list[tuple[RowCoord, str]]:
    out = []
    items = reader.items()
    while n is None or len(out) < n:
        item = next(items, None)
        if item is None:
            break
        out.append((item[0], item[1]["id"]))
    return out


@pytest.mark.parametrize("world_size", [1, 3, 4])
def test_ranks_together_cover_each_row_of_an_epoch_exactly_once(folders, world_size):
    folder, shards = folders["a"]
    expected = [row["id"] for shard in shards for row in shard]
    per_rank = []
    for rank in range(world_size):
        reader = ShardReader([folder], rank=rank, world_size=world_size, epochs=1, buffer_size=5, columns=["id"])
        per_rank.append([row["id"] for row in reader])
    seen = Counter(i for ids in per_rank for i in ids)
    assert sorted(seen) == sorted(expected)
    assert max(seen.values()) == 1
    # contiguous slices of the epoch's order: sizes floor(N/W) or ceil(N/W)
    assert {len(ids) for ids in per_rank} <= {len(expected) // world_size, -(-len(expected) // world_size)}


def test_mixed_sources_cover_every_row_once_per_epoch_across_ranks(folders):
    truth = ids_by_coord(folders)
    sources = [(folders["a"][0], 1.0), (folders["b"][0], 2.0)]
    delivered = Counter()
    for rank in range(3):
        reader = ShardReader(sources, rank=rank, world_size=3, epochs=3, seed=7, buffer_size=8, columns=["id"])
        for coord, id_ in take(reader):
            assert truth[(coord.source, coord.shard, coord.row)] == id_  # the coordinate names the row
            delivered[(coord.source, coord.epoch, coord.shard, coord.row)] += 1
    assert set(delivered.values()) == {1}
    for epoch in range(3):
        for source in (0, 1):
            got = {(s, sh, r) for (s, e, sh, r) in delivered if s == source and e == epoch}
            assert got == {c for c in truth if c[0] == source}


def test_an_epoch_reads_each_row_group_once_even_when_mixing(folders, monkeypatch):
    reads = []
    original = pq.ParquetFile.read_row_group

    def counting(self, i, *args, **kwargs):
        reads.append(i)
        return original(self, i, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counting)
    sources = [(folders["a"][0], 1.0), (folders["b"][0], 1.0)]
    rows = list(ShardReader(sources, epochs=1, buffer_size=3, columns=["id"]))
    assert len(rows) == 49 + 13
    # a: shards of 23, 17, 9 rows in groups of 4 -> 6 + 5 + 3 groups; b: 7, 6 in groups of 3 -> 3 + 2
    assert len(reads) == 6 + 5 + 3 + 3 + 2


def test_rows_come_back_as_written(folders):
    folder, shards = folders["a"]
    written = {row["id"]: row for shard in shards for row in shard}
    rows = list(ShardReader([folder], epochs=1, buffer_size=4))
    assert len(rows) == len(written)
    for row in rows:
        assert schema.validate_row(row) == []
        assert row == written[row["id"]]


def test_weights_set_the_share_of_each_source(folders):
    reader = ShardReader([(folders["a"][0], 1.0), (folders["b"][0], 3.0)], seed=1, buffer_size=1, columns=["id"])
    sources = Counter(coord.source for coord, _ in take(reader, 1200))
    assert abs(sources[1] / 1200 - 0.75) < 0.01


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 7])
def test_any_stretch_of_draws_follows_the_weights(folders, seed):
    """The draws are a low-discrepancy sequence: 200 draws, or any 100 of them in a row, hold each
    source within 0.05 of its weight's share, whatever the seed (independent draws miss a 0.25
    share by 0.03 on average at n=200, and by more than 0.05 one time in ten)."""
    weights = [(folders["a"][0], 1.0), (folders["b"][0], 3.0)]
    reader = ShardReader(weights, seed=seed, buffer_size=1, columns=["id"])
    drawn = [coord.source for coord, _ in take(reader, 400)]
    assert abs(Counter(drawn[:200])[1] / 200 - 0.75) <= 0.05
    for start in range(0, 300, 50):
        assert abs(Counter(drawn[start : start + 100])[1] / 100 - 0.75) <= 0.05, start


def test_epochs_are_reshuffled_and_seeds_differ(folders):
    folder = folders["a"][0]

    def order(seed, buffer_size):
        reader = ShardReader([folder], seed=seed, epochs=2, buffer_size=buffer_size, columns=["id"])
        items = take(reader)
        return [i for c, i in items if c.epoch == 0], [i for c, i in items if c.epoch == 1]

    # without the buffer, only the per-epoch shard / row-group order is at work
    first, second = order(0, buffer_size=1)
    assert sorted(first) == sorted(second) and first != second
    assert order(0, buffer_size=6) == order(0, buffer_size=6)  # same seed, same stream
    assert order(0, buffer_size=6)[0] != first  # the buffer shuffles further
    assert order(1, buffer_size=6)[0] != order(0, buffer_size=6)[0]


def test_unshuffled_reader_follows_manifest_order(folders):
    folder, shards = folders["a"]
    rows = ShardReader([folder], shuffle=False, buffer_size=1, epochs=1, columns=["id"])
    assert [r["id"] for r in rows] == [row["id"] for shard in shards for row in shard]


@pytest.mark.parametrize(
    "weights, world_size, k",
    [((1.0, 2.0), 1, 0), ((1.0, 2.0), 1, 17), ((3.0, 1.0), 2, 33), ((1.0, 1.0), 3, 50), ((1.0, 5.0), 4, 9)],
)
def test_resume_yields_exactly_what_an_uninterrupted_reader_yields(folders, weights, world_size, k):
    sources = [(folders["a"][0], weights[0]), (folders["b"][0], weights[1])]
    more = 60  # with 13 rows in `b`, k + more spans several of its epochs on every rank

    def make(rank):
        return ShardReader(sources, rank=rank, world_size=world_size, seed=3, buffer_size=6, columns=["id"])

    for rank in range(world_size):
        uninterrupted = take(make(rank), k + more)
        interrupted = make(rank)
        assert take(interrupted, k) == uninterrupted[:k]
        state = json.loads(json.dumps(interrupted.state_dict()))  # must survive a JSON checkpoint
        resumed = make(rank)
        resumed.load_state_dict(state)
        assert take(resumed, more) == uninterrupted[k:]
        assert take(interrupted, more) == uninterrupted[k:]  # taking the state changed nothing
        assert max(c.epoch for c, _ in uninterrupted if c.source == 1) >= 2


def test_state_of_another_stream_is_refused(folders):
    sources = [folders["a"][0], folders["b"][0]]
    reader = ShardReader(sources, seed=0, rank=0, world_size=2, columns=["id"])
    take(reader, 5)
    with pytest.raises(ValueError, match="seed"):
        ShardReader(sources, seed=1, rank=0, world_size=2).load_state_dict(reader.state_dict())
    with pytest.raises(ValueError, match="world_size"):
        ShardReader(sources, seed=0, rank=0, world_size=3).load_state_dict(reader.state_dict())


def test_read_rows_fetches_by_coordinate(folders):
    truth = ids_by_coord(folders)
    reader = ShardReader([folders["a"][0], folders["b"][0]], columns=["id"])
    coords = [(1, 0, 1, 5), (0, 4, 3, 8), (0, 0, 0, 0), (1, 2, 1, 5)]
    assert [r["id"] for r in reader.read_rows(coords)] == [truth[(s, sh, r)] for s, _, sh, r in coords]


def test_bad_folders_are_refused_with_a_reason(tmp_path, folders):
    with pytest.raises(OutputFolderError, match="no _manifest.json"):
        ShardReader([tmp_path])
    write_folder(tmp_path / "old", "old", [5])
    manifest = json.loads((tmp_path / "old" / "_manifest.json").read_text())
    (tmp_path / "old" / "_manifest.json").write_text(json.dumps({**manifest, "schema_version": 0}))
    with pytest.raises(OutputFolderError, match="schema version 0"):
        ShardReader([tmp_path / "old"])
    write_folder(tmp_path / "bad", "bad", [5])
    manifest = json.loads((tmp_path / "bad" / "_manifest.json").read_text())
    manifest["shards"][0]["sha256"] = "0" * 64
    (tmp_path / "bad" / "_manifest.json").write_text(json.dumps(manifest))
    ShardReader([tmp_path / "bad"])  # checksums are only read when asked for
    with pytest.raises(OutputFolderError, match="sha256"):
        ShardReader([tmp_path / "bad"], verify_checksums=True)
    manifest["shards"][0]["rows"] = 6
    (tmp_path / "bad" / "_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(OutputFolderError, match="holds 5 rows"):
        ShardReader([tmp_path / "bad"])
    with pytest.raises(ValueError, match="fewer than the 14 ranks"):
        ShardReader([folders["b"][0]], rank=0, world_size=14)
