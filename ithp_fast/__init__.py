"""ithp_fast: ITHP as a readable reference and a fused fast path, plus the TCMax loss.

The public names load on first use (``import ithp_fast`` imports neither torch nor transformers);
Triton, ONNX and matplotlib are imported only by the code paths that need them. ITHP-DeBERTa is
registered with transformers' Auto classes as transformers loads them (``auto_classes.py``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import auto_classes
from .version import __version__  # noqa: F401

# public name -> the module (relative to this package) that defines it
_PUBLIC = {
    "ITHPConfig": ".config",
    "ITHP": ".model",
    "ITHPDeberta": ".deberta",
    "ITHPDebertaConfig": ".deberta_config",
    "ITHPDebertaOutput": ".reference.deberta",
    "ITHPDebertaLevelsOutput": ".reference.deberta",
    "TCMaxLoss": ".losses",
    "tcmax_loss": ".losses",
    "tcmax_loss_multi": ".losses",
    "tcmax_loss_pairwise": ".losses",
    "tcmax_loss_sampled": ".losses",
    "ServingEncoder": ".serving.encoder",
    "ServingDeberta": ".serving.deberta",
    "deberta_logits": ".serving.deberta",
    "load_checkpoint": ".training.load",
    "train": ".training.api",
    "evaluate": ".training.api",
    "TrainConfig": ".training.config",
    "export": ".serving.export",
}

# sub-packages reachable as attributes (``ithp_fast.reference.ITHP``) after a bare ``import ithp_fast``
_SUBPACKAGES = ("data", "kernels", "reference", "serving", "tools", "training")

__all__ = list(_PUBLIC)

auto_classes.install()


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)  # the import binds it in this namespace
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'ithp_fast' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC) | set(_SUBPACKAGES))


if TYPE_CHECKING:  # what static tools and IDEs see
    from .config import ITHPConfig  # noqa: F401
    from .deberta import ITHPDeberta  # noqa: F401
    from .deberta_config import ITHPDebertaConfig  # noqa: F401
    from .losses import TCMaxLoss, tcmax_loss, tcmax_loss_multi, tcmax_loss_pairwise, tcmax_loss_sampled  # noqa: F401
    from .model import ITHP  # noqa: F401
    from .reference.deberta import ITHPDebertaLevelsOutput, ITHPDebertaOutput  # noqa: F401
    from .serving.deberta import ServingDeberta, deberta_logits  # noqa: F401
    from .serving.encoder import ServingEncoder  # noqa: F401
    from .serving.export import export  # noqa: F401
    from .training.api import evaluate, train  # noqa: F401
    from .training.config import TrainConfig  # noqa: F401
    from .training.load import load_checkpoint  # noqa: F401
