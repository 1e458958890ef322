"""SLERP: spherical interpolation between the base and one model, over each whole tensor."""
from __future__ import annotations

import math

from ..job import Emit, TensorJob
from ..settings import REQUIRED, UnitInterval
from . import MergeMethod, register

DOT_THRESHOLD = 0.9995  # nearly collinear: interpolate linearly instead
EPS = 1e-8


def coefficients(t: float, norm_a: float, norm_b: float, dot_ab: float) -> tuple[float, float]:
    """(ca, cb) with slerp(a, b) = ca*a + cb*b, from the norms and dot product."""
    norm_a = norm_a if norm_a > EPS else 1.0
    norm_b = norm_b if norm_b > EPS else 1.0
    dot = max(-1.0, min(1.0, dot_ab / (norm_a * norm_b)))
    if abs(dot) > DOT_THRESHOLD:
        return 1.0 - t, t
    theta = math.acos(dot)
    s = math.sin(theta)
    return math.sin((1 - t) * theta) / s, math.sin(t * theta) / s


def run(job: TensorJob, emit: Emit) -> None:
    t = float(job.shared["t"])
    saa = sbb = sab = 0.0
    for start, count in job.chunks():
        a = job.base_chunk(start, count).double()
        b = job.model_chunk(0, start, count).double()
        saa += float(a.dot(a))
        sbb += float(b.dot(b))
        sab += float(a.dot(b))
    ca, cb = coefficients(t, math.sqrt(saa), math.sqrt(sbb), sab)
    for start, count in job.chunks():
        a = job.base_chunk(start, count)
        emit(start, a.mul_(ca).add_(job.model_chunk(0, start, count), alpha=cb))


register(MergeMethod(
    "slerp", run=run, needs_base=True, min_models=1, max_models=1,
    shared_params={"t": REQUIRED}, types={"t": UnitInterval},
    summary="spherical interpolation from the base (t=0) to the other model (t=1)",
    reference="https://en.wikipedia.org/wiki/Slerp",
))
