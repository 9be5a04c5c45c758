"""ShardReader: contract rows from shard folders, mixed by weight, disjoint per data-parallel rank,
shuffled per epoch, resumable at the exact next row.

    reader = ShardReader([("out/pretrain", 3.0), ("out/ocr", 1.0)], seed=0, buffer_size=256)
    for row in reader: ...                      # row dicts of curation.schema.SCHEMA
    state = reader.state_dict()                 # small, JSON-able; checkpoint it with the engine
    ShardReader(...same arguments...).load_state_dict(state)   # continues with the next row

How rows are ordered (every choice is a pure function of the seed, so all ranks agree without
talking to each other):

1. Per source and epoch, an order of its rows: shards in a seeded random order, and inside each
   shard its row groups in a seeded random order. Shuffling whole row groups, not rows, is what
   lets a rank read a row group once with `ParquetFile.read_row_group` instead of seeking per row.
   This order does not depend on the rank.
2. Rank r of W takes the contiguous slice [N*r//W, N*(r+1)//W) of that order: ranks are disjoint,
   together they cover every row of the epoch exactly once, and each touches only ~1/W of the
   bytes. Slice sizes differ by at most one row, so ranks run through a source's epochs in
   (almost) step; nothing is dropped or repeated to even them out.
3. Each rank mixes its sources: every draw picks a source by its weight's share of [0, 1), at a
   point of a seeded low-discrepancy sequence, so any stretch of draws follows the weights closely. A source that ends its slice starts its next epoch (new order) on its own; with
   `epochs=n` a source leaves the mix after n epochs and the stream ends when all have left.
4. A bounded shuffle buffer (buffer_size rows) on top: each output is a seeded random pick from it.

Randomness is counter-based (the k-th draw of a stream comes from a generator seeded with
(seed, rank, stream, k // block)), so the state to save is a few counters, the per-source cursors
and the buffer's contents as row coordinates (source, epoch, shard, row), never row data.
Resuming needs the same sources (rows, shards), weights, seed, rank and world size; anything else
is refused with a clear error rather than silently changing the stream.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow.parquet as pq

from curation import schema
from curation.schema.manifest import Shard, list_shards

STATE_VERSION = 1
_BLOCK = 4096  # uniforms drawn per generator; any value works, it only has to stay fixed
_MIX_STREAM, _BUFFER_STREAM, _ORDER_STREAM = 1, 2, 3
_GOLDEN = (5**0.5 - 1) / 2  # 0.618...: consecutive multiples spread evenly over [0, 1)
_OPEN_FILES = 16  # Parquet files kept open per reader


class RowCoord(NamedTuple):
    """Where a row lives: the reader's source index, that source's epoch, shard index in its
    manifest, row index within the shard. Epoch is part of it so a coordinate names one delivery."""

    source: int
    epoch: int
    shard: int
    row: int


class _Source:
    """One shard folder: its row-group layout, its weight, and this rank's cursor through it."""

    def __init__(self, index: int, folder: str | Path, weight: float, verify_checksums: bool):
        if not weight > 0:
            raise ValueError(f"weight of {folder} must be positive, got {weight}")
        self.index = index
        self.folder = str(folder)
        self.weight = float(weight)
        self.shards: list[Shard] = list_shards(folder, verify_checksums=verify_checksums)
        self.rows = sum(s.rows for s in self.shards)
        # first row of each row group within its shard
        self.group_starts = [np.concatenate([[0], np.cumsum(s.row_group_rows)]).tolist() for s in self.shards]
        self.epoch = 0
        self.position = 0  # index into this epoch's order; set to the rank's slice start by the reader
        self._order_epoch: int | None = None
        self._units: list[tuple[int, int]] = []  # (shard, row group) in this epoch's order
        self._unit_starts: list[int] = []  # position of each unit's first row in the order

    def order(self, seed: int, epoch: int, shuffle: bool) -> tuple[list[tuple[int, int]], list[int]]:
        """(units, unit_starts) of an epoch: the rank-independent order of the source's rows."""
        if self._order_epoch != epoch:
            rng = np.random.default_rng([seed, _ORDER_STREAM, self.index, epoch])
            shard_order = rng.permutation(len(self.shards)) if shuffle else range(len(self.shards))
            units, starts, position = [], [], 0
            for shard in shard_order:
                sizes = self.shards[shard].row_group_rows
                group_order = rng.permutation(len(sizes)) if shuffle else range(len(sizes))
                for group in group_order:
                    if sizes[group]:
                        units.append((int(shard), int(group)))
                        starts.append(position)
                        position += sizes[group]
            self._order_epoch, self._units, self._unit_starts = epoch, units, starts
        return self._units, self._unit_starts


class ShardReader:
    """Iterates contract rows (dicts) of one or more shard folders; see the module docstring.

    sources: folders, or (folder, weight) pairs; weights are relative draw probabilities.
    rank, world_size: this data-parallel rank; default torch.distributed's when initialised, else 0/1.
    buffer_size: rows held for shuffling (1 = no buffer shuffle); memory is about this many rows.
    epochs: None streams forever; n ends after every source has delivered its rows n times.
    columns: read only these columns (e.g. metadata for cost estimates); default all of SCHEMA.
    """

    def __init__(
        self,
        sources: Sequence[str | Path | tuple[str | Path, float]],
        *,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        buffer_size: int = 256,
        shuffle: bool = True,
        epochs: int | None = None,
        columns: Sequence[str] | None = None,
        verify_checksums: bool = False,
    ):
        if not sources:
            raise ValueError("ShardReader needs at least one shard folder")
        rank, world_size = _default_rank(rank, world_size)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.seed, self.rank, self.world_size = int(seed), rank, world_size
        self.buffer_size = max(1, int(buffer_size))
        self.shuffle = shuffle
        self.epochs = epochs
        self.columns = list(columns) if columns is not None else list(schema.COLUMNS)
        unknown = set(self.columns) - set(schema.COLUMNS)
        if unknown:
            raise ValueError(f"columns {sorted(unknown)} are not in the sample contract")
        self.sources: list[_Source] = []
        for index, spec in enumerate(sources):
            folder, weight = spec if isinstance(spec, tuple) else (spec, 1.0)
            source = _Source(index, folder, weight, verify_checksums)
            if source.rows < world_size:
                # every rank must get at least one row of every source per epoch, or a rank with
                # an empty slice would spin through epochs without producing anything
                raise ValueError(f"{folder} has {source.rows} rows, fewer than the {world_size} ranks")
            source.position = self._slice(source)[0]
            self.sources.append(source)
        self._mix_draws = 0  # uniforms consumed by source choice
        self.drawn: Counter[int] = Counter()  # rows drawn per source since this object was made (metrics)
        self._buffer_picks = 0  # uniforms consumed by buffer picks
        self._buffer: list[tuple[RowCoord, dict]] = []
        self._uniform_blocks: dict[int, tuple[int, np.ndarray]] = {}
        self._files: OrderedDict[tuple[int, int], pq.ParquetFile] = OrderedDict()
        # per source, the row group its cursor is in: a slice is read a row group at a time, and
        # keeping one per source means mixing sources never re-reads a group
        self._groups: dict[int, tuple[tuple[int, int], list[dict]]] = {}

    # --- iteration ------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        return self.next_item()[1]

    def items(self) -> Iterator[tuple[RowCoord, dict]]:
        """(coordinate, row) pairs; the coordinate is what `read_rows` takes back."""
        while True:
            try:
                yield self.next_item()
            except StopIteration:
                return

    def next_item(self) -> tuple[RowCoord, dict]:
        while len(self._buffer) < self.buffer_size:
            coord = self._next_coord()
            if coord is None:
                break
            self._buffer.append((coord, self._read_one(coord)))
        if not self._buffer:
            raise StopIteration
        pick = int(self._uniform(_BUFFER_STREAM, self._buffer_picks) * len(self._buffer))
        self._buffer_picks += 1
        # swap-remove: O(1), and the buffer's order stays a deterministic function of the state
        last = self._buffer.pop()
        if pick == len(self._buffer):
            return last
        item, self._buffer[pick] = self._buffer[pick], last
        return item

    def _next_coord(self) -> RowCoord | None:
        """The next row of the mix (before the buffer), advancing the chosen source's cursor."""
        active = [s for s in self.sources if self.epochs is None or s.epoch < self.epochs]
        if not active:
            return None
        # A low-discrepancy sequence (a seeded start, then steps of the golden ratio) instead of
        # independent draws: every window of n draws holds each source within O(log n) of its
        # weight's share (200 independent draws miss a 0.4 weight by 0.035 on average), and the
        # shuffle buffer below still randomises the order.
        u = (self._uniform(_MIX_STREAM, 0) + self._mix_draws * _GOLDEN) % 1.0
        self._mix_draws += 1
        cumulative = np.cumsum([s.weight for s in active])
        source = active[min(int(np.searchsorted(cumulative, u * cumulative[-1], side="right")), len(active) - 1)]
        self.drawn[source.index] += 1
        units, starts = source.order(self.seed, source.epoch, self.shuffle)
        unit = bisect_right(starts, source.position) - 1
        shard, group = units[unit]
        row = source.group_starts[shard][group] + source.position - starts[unit]
        coord = RowCoord(source.index, source.epoch, shard, row)
        source.position += 1
        low, high = self._slice(source)
        if source.position == high:
            source.epoch, source.position = source.epoch + 1, low
        return coord

    def _slice(self, source: _Source) -> tuple[int, int]:
        n, r, w = source.rows, self.rank, self.world_size
        return n * r // w, n * (r + 1) // w

    def _uniform(self, stream: int, k: int) -> float:
        block, offset = divmod(k, _BLOCK)
        cached = self._uniform_blocks.get(stream)
        if cached is None or cached[0] != block:
            values = np.random.default_rng([self.seed, self.rank, stream, block]).random(_BLOCK)
            cached = self._uniform_blocks[stream] = (block, values)
        return float(cached[1][offset])

    # --- reading rows ---------------------------------------------------------------------------

    def _read_one(self, coord: RowCoord) -> dict:
        source = self.sources[coord.source]
        starts = source.group_starts[coord.shard]
        group = bisect_right(starts, coord.row) - 1
        cached = self._groups.get(coord.source)
        if cached is None or cached[0] != (coord.shard, group):
            table = self._file(coord.source, coord.shard).read_row_group(group, columns=self.columns)
            cached = self._groups[coord.source] = ((coord.shard, group), table.to_pylist())
        return cached[1][coord.row - starts[group]]

    def read_rows(self, coords: Iterable[Sequence[int]]) -> list[dict]:
        """Rows at the given coordinates (any rank's), each row group read once. For resuming the
        buffer, and for a rank that must run a sequence another rank read (see balance.py)."""
        coords = [RowCoord(*c) for c in coords]
        groups: dict[tuple[int, int, int], list[dict]] = {}
        rows = []
        for coord in coords:
            starts = self.sources[coord.source].group_starts[coord.shard]
            group = bisect_right(starts, coord.row) - 1
            key = (coord.source, coord.shard, group)
            if key not in groups:
                table = self._file(coord.source, coord.shard).read_row_group(group, columns=self.columns)
                groups[key] = table.to_pylist()
            rows.append(groups[key][coord.row - starts[group]])
        return rows

    def _file(self, source: int, shard: int) -> pq.ParquetFile:
        key = (source, shard)
        if key in self._files:
            self._files.move_to_end(key)
        else:
            self._files[key] = pq.ParquetFile(self.sources[source].shards[shard].path)
            if len(self._files) > _OPEN_FILES:
                self._files.popitem(last=False)
        return self._files[key]

    # --- checkpoint state -----------------------------------------------------------------------

    def _fingerprint(self) -> dict:
        return {
            "sources": [
                {"rows": s.rows, "shards": [sh.rows for sh in s.shards], "weight": s.weight} for s in self.sources
            ],
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "buffer_size": self.buffer_size,
            "shuffle": self.shuffle,
            "epochs": self.epochs,
        }

    def state_dict(self) -> dict:
        """JSON-able state after the rows yielded so far; restoring it resumes at the next row."""
        return {
            "version": STATE_VERSION,
            "stream": self._fingerprint(),
            "folders": [s.folder for s in self.sources],  # for people reading a checkpoint
            "cursors": [[s.epoch, s.position] for s in self.sources],
            "mix_draws": self._mix_draws,
            "buffer_picks": self._buffer_picks,
            "buffer": [list(coord) for coord, _ in self._buffer],
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"reader state version {state.get('version')}, expected {STATE_VERSION}")
        mine = self._fingerprint()
        differ = [key for key in mine if state["stream"].get(key) != mine[key]]
        if differ:
            raise ValueError(
                f"reader state was saved for a different stream ({', '.join(differ)} differ): "
                f"saved {[state['stream'].get(k) for k in differ]}, now {[mine[k] for k in differ]}"
            )
        for source, (epoch, position) in zip(self.sources, state["cursors"]):
            source.epoch, source.position = int(epoch), int(position)
        self._mix_draws = int(state["mix_draws"])
        self._buffer_picks = int(state["buffer_picks"])
        coords = [RowCoord(*c) for c in state["buffer"]]
        self._buffer = list(zip(coords, self.read_rows(coords)))

    @property
    def source_epochs(self) -> list[int]:
        """The epoch each source is in on this rank (how many passes it has completed)."""
        return [s.epoch for s in self.sources]


def _default_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return int(rank), int(world_size)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return (dist.get_rank() if rank is None else int(rank)), (
            dist.get_world_size() if world_size is None else int(world_size)
        )
    return (0 if rank is None else int(rank)), (1 if world_size is None else int(world_size))
