"""Model registry: ``create_model(name, **kwargs)`` builds any registered model.

Every model is a :class:`autocolor.models.base.ChromaModel` (L in, ab out, in
Lab units) or an :class:`autocolor.models.base.RGBModel` (gray in, RGB out);
see :mod:`autocolor.models.base` for the contract.
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Decorator adding a model factory to the registry under ``name``."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = factory
        return factory

    return wrap


def available_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_REGISTRY)


def model_factory(name: str) -> Callable[..., nn.Module]:
    """The factory registered as ``name`` (its signature is a model folder's config schema)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(available_models())}")
    return _REGISTRY[name]


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name`` with its keyword arguments."""
    model = model_factory(name)(**kwargs)
    model.registry_name = name
    model.registry_kwargs = dict(kwargs)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Importing the modules registers their models.
from autocolor.models import cae, chroma_unet, levin, unet_rgb  # noqa: E402,F401
