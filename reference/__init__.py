"""The pure-PyTorch reference: the spec as plain formulas (installed as ``ithp_fast.reference``).

``ITHP`` loads with the package; the ITHP-DeBERTa names (``deberta.py``, which imports transformers)
load on first use, so ``ithp_fast.reference.ITHP`` costs no more than torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .ithp import ITHP, kl_to_standard_normal, reparameterize

_DEBERTA_NAMES = ("ITHPDeberta", "ITHPDebertaLevelsOutput", "ITHPDebertaOutput")

__all__ = ["ITHP", *_DEBERTA_NAMES, "kl_to_standard_normal", "reparameterize"]


def __getattr__(name: str) -> Any:
    if name in _DEBERTA_NAMES:
        return getattr(importlib.import_module(".deberta", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from .deberta import ITHPDeberta, ITHPDebertaLevelsOutput, ITHPDebertaOutput  # noqa: F401
