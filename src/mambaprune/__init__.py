"""MambaPrune: Vision Mamba classifiers made smaller and faster by structured pruning."""

from .checkpoint import load_checkpoint, save_checkpoint
from .counting import count_flops, count_params, size_report
from .inference import optimize_for_inference
from .models import VisionMamba, create_model, list_models
from .pruning import prune_model

__all__ = ["VisionMamba", "create_model", "list_models", "prune_model", "save_checkpoint", "load_checkpoint",
           "count_params", "count_flops", "size_report", "optimize_for_inference"]
