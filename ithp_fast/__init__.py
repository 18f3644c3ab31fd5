"""ithp_fast: ITHP as a readable reference and a fused fast path, plus the TCMax loss."""

from .config import ITHPConfig
from .model import ITHP
from .reference import ITHPDeberta, ITHPDebertaOutput

__all__ = ["ITHP", "ITHPConfig", "ITHPDeberta", "ITHPDebertaOutput"]
__version__ = "0.1.0"
