"""Fine-tuning under Accelerate: options, model building per method, the loop, the summary."""

from .._lazy import lazy_getattr

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
__getattr__ = lazy_getattr(__name__, {
    "RunResult": ".summary", "evaluate": ".loop", "train": ".loop",
    "BuiltModel": ".methods", "build_model": ".methods", "load_classifier": ".methods",
    "DEFAULT_LR": ".options", "DEMO_PRESET": ".options", "FinetuneOptions": ".options",
    "load_yaml_options": ".options", "merge_options": ".options",
})
