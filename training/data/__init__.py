"""The trainer's data path: shard folders -> ShardReader -> (Processor, Packer) -> DataPipeline.

reader.py    ShardReader: rank-disjoint, weighted-mix, seeded-shuffle, resumable rows (folders are
             read through curation.schema.manifest, the one manifest module)
cost.py      FLOPs of a sample / packed sequence (ViT + projector + LLM) for load balancing
balance.py   assigning a global step's packed sequences to data-parallel ranks (training/global_step.py
             decides each step with it)
packer.py    whole samples into sequences of max_tokens
pipeline.py  reader -> processor -> packer, with a resumable state
"""

from .balance import Assignment, all_gather_lists, balance_costs, greedy_lpt, karmarkar_karp
from .cost import ModelDims, SampleShape, sample_flops, sample_shape, sequence_flops
from .reader import RowCoord, ShardReader

__all__ = [
    "Assignment",
    "ModelDims",
    "RowCoord",
    "SampleShape",
    "ShardReader",
    "all_gather_lists",
    "balance_costs",
    "greedy_lpt",
    "karmarkar_karp",
    "sample_flops",
    "sample_shape",
    "sequence_flops",
]

# The packer and the pipeline (reader -> processor -> packer); pipeline.py documents the flow.
from .packer import Packer, fit_to_limit, packed_inputs, vision_cu_seqlens
from .pipeline import DataPipeline, PackedBatch

__all__ += ["DataPipeline", "PackedBatch", "Packer", "fit_to_limit", "packed_inputs", "vision_cu_seqlens"]
