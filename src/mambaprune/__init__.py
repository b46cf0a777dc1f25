"""MambaPrune: Vision Mamba classifiers made smaller and faster by structured pruning."""

from .models import VisionMamba, create_model, list_models

__all__ = ["VisionMamba", "create_model", "list_models"]
