"""The pure-PyTorch reference: the spec as plain formulas (installed as ``ithp_fast.reference``)."""

from .deberta import ITHPDeberta, ITHPDebertaLevelsOutput, ITHPDebertaOutput
from .ithp import ITHP, kl_to_standard_normal, reparameterize

__all__ = ["ITHP", "ITHPDeberta", "ITHPDebertaLevelsOutput", "ITHPDebertaOutput", "kl_to_standard_normal",
           "reparameterize"]
