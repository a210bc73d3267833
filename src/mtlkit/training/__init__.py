"""Training, evaluation, prediction and checkpoints."""

from mtlkit.training.checkpoint import load_checkpoint, save_checkpoint
from mtlkit.training.trainer import Trainer, TrainingOptions

__all__ = ["Trainer", "TrainingOptions", "load_checkpoint", "save_checkpoint"]
