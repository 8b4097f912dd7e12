"""The intrinsic-dimension adapter: config, layout, head initialisation, model wrapper."""

from .config import METHODS, IntrinsicConfig
from .layout import Layout, build_layout
from .model import IntrinsicModel, get_intrinsic_model

__all__ = ["METHODS", "IntrinsicConfig", "IntrinsicModel", "Layout", "build_layout", "get_intrinsic_model"]
