"""Registry of named model sizes (cf. timm's ``register_model``)."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Store ``fn`` under its ``__name__`` so ``create_model(name)`` can find it."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, num_classes: int = 10, img_size: int = 32, **overrides) -> nn.Module:
    """Build a registered model; ``overrides`` replace any constructor argument of the size."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(list_models())}")
    return _MODELS[name](num_classes=num_classes, img_size=img_size, **overrides)
