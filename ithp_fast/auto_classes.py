"""ITHP-DeBERTa in transformers' Auto classes, registered as transformers loads them.

After ``import ithp_fast``, ``AutoConfig`` knows ``model_type`` ``"ithp_deberta"``, and ``AutoModel`` /
``AutoModelForSequenceClassification`` (so ``pipeline("text-classification")``) build
:class:`ithp_fast.ITHPDeberta`. Registering needs the classes, whose imports cost what importing
transformers' configuration code (about 1.5 s) and its modeling code (about 4 s, loading
torch._dynamo and Triton) cost, so ``import ithp_fast`` registers nothing itself:

* the config is registered right after transformers has loaded ``configuration_auto`` (where
  ``AutoConfig`` lives, and which every Auto class loads first);
* the models are registered by ``ithp_fast/deberta.py`` when it is imported: by the first use of
  :class:`ithp_fast.ITHPDeberta`, or by the first :class:`ithp_fast.ITHPDebertaConfig` made, which
  every Auto class makes before it looks a model up.
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable

CONFIG_MODULE = "transformers.models.auto.configuration_auto"
MODEL_MODULE = "ithp_fast.deberta"


def register_config() -> None:
    """``AutoConfig`` builds an :class:`~ithp_fast.ITHPDebertaConfig` for ``model_type`` ``"ithp_deberta"``;
    the model class is imported (and so registered) when the first such config is made."""
    from .deberta_config import ON_FIRST_CONFIG, ITHPDebertaConfig

    sys.modules[CONFIG_MODULE].AutoConfig.register(ITHPDebertaConfig.model_type, ITHPDebertaConfig, exist_ok=True)
    if MODEL_MODULE not in sys.modules:
        ON_FIRST_CONFIG.append(lambda: importlib.import_module(MODEL_MODULE))


class RunAfterLoading:
    """A module's own loader, then a function once the module has run (an import loader: ``create_module`` and
    ``exec_module``; not derived from ``importlib.abc``, whose import costs more than this whole module)."""

    def __init__(self, loader, then: Callable[[], None]) -> None:
        self.loader, self.then = loader, then

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        self.then()

    def __getattr__(self, name: str):  # get_source, get_code, is_package, ... of the module's loader
        return getattr(self.loader, name)


class RegisterOnImport:
    """A meta path finder: finds transformers' ``configuration_auto`` as the other finders do, with a loader that
    then registers the config."""

    def find_spec(self, name: str, path=None, target=None):
        if name != CONFIG_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = RunAfterLoading(spec.loader, register_config)
                return spec
        return None


def install() -> None:
    """Register the config now if transformers has loaded ``configuration_auto``, else when it does."""
    if CONFIG_MODULE in sys.modules:
        register_config()
    elif not any(isinstance(finder, RegisterOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, RegisterOnImport())
