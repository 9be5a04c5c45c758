"""The trainer's data path: shard folders -> ShardReader -> (Processor, Packer) -> Balancer.

reader.py    ShardReader: rank-disjoint, weighted-mix, seeded-shuffle, resumable rows
manifest.py  reading a curation output folder's manifest (training imports no curation.writer)
cost.py      FLOPs of a sample / packed sequence (ViT + projector + LLM) for load balancing
balance.py   assigning a global step's packed sequences to data-parallel ranks
"""

from .balance import (
    Assignment,
    Balancer,
    balance_costs,
    exchange_costs,
    greedy_lpt,
    karmarkar_karp,
    plan_global_step,
)
from .cost import ModelDims, SampleShape, sample_flops, sample_shape, sequence_flops
from .manifest import ShardFolderError, list_shards, read_manifest
from .reader import RowCoord, ShardReader

__all__ = [
    "Assignment",
    "Balancer",
    "ModelDims",
    "RowCoord",
    "SampleShape",
    "ShardFolderError",
    "ShardReader",
    "balance_costs",
    "exchange_costs",
    "greedy_lpt",
    "karmarkar_karp",
    "list_shards",
    "plan_global_step",
    "read_manifest",
    "sample_flops",
    "sample_shape",
    "sequence_flops",
]

# The packer and the pipeline (reader -> processor -> packer); pipeline.py documents the flow.
from .packer import Packer, fit_to_limit, packed_inputs, vision_cu_seqlens
from .pipeline import DataPipeline, PackedBatch

__all__ += ["DataPipeline", "PackedBatch", "Packer", "fit_to_limit", "packed_inputs", "vision_cu_seqlens"]
