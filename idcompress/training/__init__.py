"""Fine-tuning under Accelerate: options, model building per method, the loop, the summary."""

from .loop import RunResult, evaluate, train
from .methods import BuiltModel, build_model, load_classifier
from .options import DEFAULT_LR, DEMO_PRESET, FinetuneOptions, load_yaml_options, merge_options

__all__ = [
    "DEFAULT_LR",
    "DEMO_PRESET",
    "BuiltModel",
    "FinetuneOptions",
    "RunResult",
    "build_model",
    "evaluate",
    "load_classifier",
    "load_yaml_options",
    "merge_options",
    "train",
]
