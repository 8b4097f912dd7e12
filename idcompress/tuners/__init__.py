"""The intrinsic-dimension adapter, a PEFT method: config, layout, head initialisation, composition, tuner."""

from ..names import PROJECTION_CHOICES
from .config import IntrinsicConfig
from .layout import Layout, build_layout
from .model import IntrinsicModel, get_intrinsic_model, save_checkpoint, tuner_of
from .registration import register

register(IntrinsicConfig, IntrinsicModel)

__all__ = [
    "PROJECTION_CHOICES", "IntrinsicConfig", "IntrinsicModel", "Layout", "build_layout",
    "get_intrinsic_model", "save_checkpoint", "tuner_of",
]
