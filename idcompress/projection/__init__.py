"""Random projections ``P : R^d → R^D`` and the randomness they are built from: the math only."""

from __future__ import annotations

from .base import Projection
from .dense import DenseProjection
from .fastfood import FastfoodProjection, fastfood_shape
from .fwht import fwht, hadamard
from .sparse import SparseProjection

PROJECTIONS: dict[str, type[Projection]] = {
    "dense": DenseProjection,
    "sparse": SparseProjection,
    "fastfood": FastfoodProjection,
}


def make_projection(kind: str, d: int, D: int, seed: int = 0, **options) -> Projection:
    """Build the projection ``kind`` ∈ {dense, sparse, fastfood} from ``R^d`` to ``R^D``.

    A pure function of ``(kind, d, D, seed)``; ``options`` tune caching and size limits only.
    """
    if kind not in PROJECTIONS:
        raise ValueError(f"projection={kind!r} is unknown; choose one of {sorted(PROJECTIONS)}")
    return PROJECTIONS[kind](d, D, seed, **options)


__all__ = [
    "PROJECTIONS",
    "DenseProjection",
    "FastfoodProjection",
    "Projection",
    "SparseProjection",
    "fastfood_shape",
    "fwht",
    "hadamard",
    "make_projection",
]
