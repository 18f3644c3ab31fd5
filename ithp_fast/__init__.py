"""ithp_fast: ITHP as a readable reference and a fused fast path, plus the TCMax loss."""

from .config import ITHPConfig
from .inference import ServingDeberta, ServingEncoder, deberta_logits
from .losses import TCMaxLoss, tcmax_loss, tcmax_loss_multi, tcmax_loss_pairwise, tcmax_loss_sampled
from .model import ITHP
from .reference import ITHPDeberta, ITHPDebertaOutput

__all__ = [
    "ITHP", "ITHPConfig", "ITHPDeberta", "ITHPDebertaOutput",
    "TCMaxLoss", "tcmax_loss", "tcmax_loss_multi", "tcmax_loss_pairwise", "tcmax_loss_sampled",
    "ServingEncoder", "ServingDeberta", "deberta_logits",
]
__version__ = "0.1.0"
