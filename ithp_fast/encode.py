"""Fast ``encode``: b1 from the text features alone (placeholder: the reference chain)."""

from .reference.ithp import ITHP as ReferenceITHP


def encode(model, x, *, sample: bool = False, noise=None):
    return ReferenceITHP.encode(model, x, sample=sample, noise=noise)
