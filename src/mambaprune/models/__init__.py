"""Models: importing the family files runs their ``@register_model`` decorators."""

from . import mamba  # noqa: F401
from .mamba import VisionMamba
from .registry import create_model, list_models, register_model

__all__ = ["VisionMamba", "create_model", "list_models", "register_model"]
