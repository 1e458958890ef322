"""Passthrough (mergekit's `passthrough`): one model's tensors unchanged, or multiplied by
its `scale`. Alone it copies (or rescales) a model; its main use in mergekit is in
`slices`, to stack layer ranges. Elementwise, streamed chunk by chunk.
"""
from __future__ import annotations

from ..job import Emit, TensorJob
from ..settings import Weight
from . import MergeMethod, register


def run(job: TensorJob, emit: Emit) -> None:
    scale = job.params[0]["scale"]
    for start, count in job.chunks():
        chunk = job.model_chunk(0, start, count)
        emit(start, chunk if scale is None else chunk * float(scale))


register(MergeMethod(
    "passthrough", run=run, needs_base=False, min_models=1, max_models=1,
    model_params={"scale": None}, types={"scale": Weight},
    summary="one model's tensors as they are (or times its scale); with slices, stacks layer ranges",
    reference="https://github.com/arcee-ai/mergekit/blob/main/docs/merge_methods.md",
))
