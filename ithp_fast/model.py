"""The drop-in fast ITHP: the reference's modules and state_dict, a faster forward / encode."""

from __future__ import annotations

from typing import Optional

from .backends import validate_backend
from .config import ConfigLike
from .reference.ithp import ITHP as ReferenceITHP


class ITHP(ReferenceITHP):
    """Drop-in for :class:`ithp_fast.reference.ITHP` (same constructor dict, same state_dict)."""

    def __init__(self, ITHP_args: ConfigLike, *, eval_sampling: str = "sample", backend: Optional[str] = None) -> None:
        super().__init__(ITHP_args, eval_sampling=eval_sampling)
        self.backend = validate_backend(backend)

    def encode(self, x, *, sample: bool = False, noise=None):
        from .encode import encode

        return encode(self, x, sample=sample, noise=noise)
