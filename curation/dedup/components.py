"""Connected components of a graph held in a Spark DataFrame, and keeping one row per component.

The algorithm is the alternating large-star / small-star contraction of Kiveris et al.,
"Connected Components in MapReduce and Beyond" (SoCC 2014): every round points each node at the
smallest node it can see, and the edge set converges to one star per component whose centre is the
component's smallest node. It needs O(log^2 n) rounds; each round is a few joins and group-bys,
and its result is checkpointed so the lineage (and query plan) stays short however many rounds
run. Before the first round, each shuffle partition (edges grouped by their smaller end) replaces
its edges by the stars of their components (a compiled union-find over that partition only): the
components are unchanged, most edges collapse, and the rounds only join components that
partitions split (none when the graph fits one partition, as near-duplicate graphs of a few
hundred thousand documents do). By default the graph never leaves the executors, whatever its
size. Opt-in (`local_max_edges` > 0, the steps' `driver_components_max_edges`): a graph of at most
that many edges is collected and solved by union-find in the driver, the same components in one
Spark job; it needs driver memory (~200 bytes an edge), so it stays off unless asked for.

Nodes are strings (row ids), so the component label is the smallest id in the component: the result
is the same whatever the partitioning or the order of the edges.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from curation.spark import checkpoint
from curation.steps import is_kept, mark

log = logging.getLogger(__name__)


class ComponentsDidNotConverge(RuntimeError):
    pass


def connected_components(
    edges: DataFrame, max_rounds: int = 64, local_max_edges: int = 0, stats: dict | None = None
) -> DataFrame:
    """(node, component) for every node that appears in `edges` (columns src, dst).

    `component` is the smallest node of the node's connected component (a root maps to itself).
    `stats`, when given, gets the star rounds that were needed (`rounds`; 0 when the partition
    contraction or the driver's union-find finished the graph).
    """
    stats = {} if stats is None else stats
    edges = edges.select(F.col("src").cast("string"), F.col("dst").cast("string"))
    if local_max_edges > 0:
        current = checkpoint(_normalise(edges))
        if current.count() <= local_max_edges:
            stats["rounds"] = 0
            return _local_components(current)
    current = checkpoint(_contract_partitions(edges))
    rounds = 0
    while not _is_star_forest(current):
        if rounds == max_rounds:
            raise ComponentsDidNotConverge(f"connected components did not converge in {max_rounds} rounds")
        rounds += 1
        current = checkpoint(_small_star(_large_star(current)))
    log.info("connected components converged after %d rounds", rounds)
    stats["rounds"] = rounds
    # Once converged every edge is (child, root) with root < child.
    children = current.select(F.col("src").alias("node"), F.col("dst").alias("component"))
    roots = current.select(F.col("dst").alias("node"), F.col("dst").alias("component")).distinct()
    return children.unionByName(roots)


def _contract_partitions(edges: DataFrame) -> DataFrame:
    """Round 0: edges grouped by their smaller end, and each partition's edges replaced by their
    components as stars (node -> smallest node of its component within the partition), by a
    compiled union-find over that partition alone. The components of the whole graph are unchanged
    and most of its edges collapse; a component whose edges all met in one partition is finished
    (all of them, for a graph small enough for one partition), and the star rounds join the rest.
    Self loops are dropped and repeated edges merge: the output is (larger, smaller), each once.
    """
    pairs = edges.where(F.col("src") != F.col("dst")).select(
        F.greatest("src", "dst").alias("src"), F.least("src", "dst").alias("dst")
    )
    return pairs.repartition("dst").mapInArrow(_contract_partition, "src string, dst string")


def _contract_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    from curation.dedup import kernels  # numba, in the workers only

    table = pa.Table.from_batches(list(batches), schema=pa.schema([("src", pa.string()), ("dst", pa.string())]))
    if not table.num_rows:
        return
    src, dst = table.column("src").combine_chunks(), table.column("dst").combine_chunks()
    nodes = pc.unique(pa.concat_arrays([src, dst]))
    nodes = nodes.take(pc.sort_indices(nodes))  # node number order is string order: roots are the smallest
    numbers = [pc.index_in(side, value_set=nodes).to_numpy().astype(np.int64) for side in (src, dst)]
    root = kernels.min_roots(numbers[0], numbers[1], len(nodes))
    child = np.flatnonzero(root != np.arange(len(nodes)))
    yield pa.RecordBatch.from_arrays([nodes.take(child), nodes.take(root[child])], ["src", "dst"])


def _local_components(edges: DataFrame) -> DataFrame:
    """Union-find over the collected edges; the root of a set is always its smallest node."""
    table = edges.toArrow()
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while x != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for a, b in zip(table.column("src").to_pylist(), table.column("dst").to_pylist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
        parent.setdefault(ra, ra)
        parent.setdefault(rb, rb)
    nodes = sorted(parent)
    result = pa.table(
        {"node": pa.array(nodes, pa.string()), "component": pa.array([find(n) for n in nodes], pa.string())}
    )
    return edges.sparkSession.createDataFrame(result)


def _normalise(edges: DataFrame) -> DataFrame:
    """Undirected edges as (larger, smaller) without self loops or repeats."""
    return (
        edges.where(F.col("src") != F.col("dst"))
        .select(F.greatest("src", "dst").alias("src"), F.least("src", "dst").alias("dst"))
        .distinct()
    )


def _large_star(edges: DataFrame) -> DataFrame:
    """Each node u links its larger neighbours to m(u), the smallest of u and its neighbours.

    The output is hash-partitioned by its `src` and free of repeats, which is what `_small_star`
    groups by: one shuffle feeds both steps.
    """
    both = edges.unionByName(edges.select(F.col("dst").alias("src"), F.col("src").alias("dst")))
    m = F.least(F.min("dst").over(Window.partitionBy("src")), F.col("src"))
    out = both.withColumn("m", m).where(F.col("dst") > F.col("src"))
    # v > u >= m(u): already (larger, smaller), never a self loop.
    return out.select(F.col("dst").alias("src"), F.col("m").alias("dst")).repartition("src").distinct()


def _small_star(edges: DataFrame) -> DataFrame:
    """Each node u links itself and its smaller neighbours to the smallest of them."""
    # `edges` are (larger, smaller): grouped by the larger end they are u's smaller neighbours.
    with_m = edges.withColumn("m", F.min("dst").over(Window.partitionBy("src")))
    to_m = with_m.where(F.col("dst") != F.col("m")).select(F.col("dst").alias("src"), F.col("m").alias("dst"))
    self_to_m = with_m.select("src", F.col("m").alias("dst"))
    return to_m.unionByName(self_to_m).distinct()


def _is_star_forest(edges: DataFrame) -> bool:
    """True when every node has at most one parent and no parent has a parent of its own
    (one aggregation, one Spark job)."""
    as_child = edges.select(F.col("src").alias("node"), F.lit(1).alias("child"), F.lit(0).alias("parent"))
    as_parent = edges.select(F.col("dst").alias("node"), F.lit(0).alias("child"), F.lit(1).alias("parent"))
    roles = as_child.unionByName(as_parent).groupBy("node").agg(F.sum("child").alias("c"), F.max("parent").alias("p"))
    bad = roles.where((F.col("c") > 1) | ((F.col("c") > 0) & (F.col("p") > 0)))
    return bad.limit(1).count() == 0


class PhaseClock:
    """Seconds of each phase of a step, kept in its stats (`phase_seconds`)."""

    def __init__(self, stats: dict):
        self.phases = stats.setdefault("phase_seconds", {})
        self.last = time.perf_counter()

    def note(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] = round(now - self.last, 3)
        self.last = now


def reject_duplicates(
    df: DataFrame,
    components: DataFrame,
    step: str,
    reason: str,
    keep_by: str | None = None,
    stats: dict | None = None,
) -> DataFrame:
    """Keep one row per component, mark the others rejected with the kept row's id as detail.

    The kept row has the highest `keep_by` value (nulls last) when a quality column is named,
    then the smallest id: a deterministic rule, independent of partitioning. `stats`, when given,
    gets the components' count and their sizes (`cluster_sizes`: size -> components).
    """
    if not keep_by:
        # The component label is its smallest id, which is the row kept: no ranking needed.
        verdicts = components.where(F.col("node") != F.col("component")).select(
            F.col("node").alias("id"), F.lit(reason).alias("reason"), F.col("component").alias("detail")
        )
    else:
        quality = df.where(is_kept()).select("id", F.col(keep_by).alias("_quality")).dropDuplicates(["id"])
        members = components.select(F.col("node").alias("id"), "component").join(quality, "id", "left")
        order = [F.col("_quality").desc_nulls_last(), F.col("id").asc()]
        rank = Window.partitionBy("component").orderBy(*order)
        ranked = members.withColumn(
            "_keeper", F.first("id").over(rank.rowsBetween(Window.unboundedPreceding, Window.currentRow))
        )
        verdicts = ranked.where(F.col("_keeper") != F.col("id")).select(
            "id", F.lit(reason).alias("reason"), F.col("_keeper").alias("detail")
        )
    verdicts = checkpoint(verdicts)
    rows = verdicts.count()
    if stats is not None:
        sizes = components.groupBy("component").count().groupBy(F.col("count").alias("size")).count().collect()
        stats["components"] = sum(r["count"] for r in sizes)
        stats["cluster_sizes"] = {str(r["size"]): r["count"] for r in sorted(sizes, key=lambda r: r["size"])}
        stats["duplicate_rows"] = rows
    return mark(df, verdicts, step, on="id", rows=rows)
