"""Initialisation of new parameters (heads the pretrained checkpoint lacks) from the seeded generator.

So that seed + vector rebuild the whole model (docs/design.md, "Randomness"): tensor ``name`` draws from stream
``"init/<name>"``. Biases are zero, the weight of a normalisation layer is one, everything else is
``normal · std`` with ``std`` = ``config.init_std``, else the model's ``initializer_range``, else 0.02.
"""

from __future__ import annotations

import fnmatch

import torch
from torch import nn

from ..projection import rng

DEFAULT_INIT_STD = 0.02


def _named_param_owners(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    out = {}
    for mod_name, module in model.named_modules():
        for attr, p in module._parameters.items():
            if p is not None:
                out[f"{mod_name}.{attr}" if mod_name else attr] = (module, attr)
    return out


def resolve_new_params(model: nn.Module, init_new: list[str] | str | None) -> list[str]:
    """Names (in ``named_parameters`` order) of the parameters to initialise from the generator.

    ``"auto"``: names a loader recorded in ``model._idcompress_new_keys`` (our loaders set it from
    transformers' ``missing_keys``); else, for a transformers model whose checkpoint was saved
    as another class than this one (``config.architectures``), every parameter outside
    ``base_model_prefix`` (the task head); else none.
    """
    names = [n for n, _ in model.named_parameters()]
    if init_new is None:
        return []
    if init_new == "auto":
        recorded = getattr(model, "_idcompress_new_keys", None)
        if recorded is not None:
            recorded = set(recorded)
            return [n for n in names if n in recorded]
        cfg = getattr(model, "config", None)
        prefix = getattr(model, "base_model_prefix", "")
        archs = getattr(cfg, "architectures", None) or []
        if cfg is not None and prefix and type(model).__name__ not in archs:
            return [n for n in names if not n.startswith(prefix + ".")]
        return []
    out = []
    for pat in init_new:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            raise ValueError(f"init_new entry {pat!r} matches no parameter of {type(model).__name__}")
        out.extend(h for h in hits if h not in out)
    return [n for n in names if n in out]


def init_std_for(model: nn.Module, init_std: float | None) -> float:
    if init_std is not None:
        return float(init_std)
    cfg = getattr(model, "config", None)
    return float(getattr(cfg, "initializer_range", DEFAULT_INIT_STD) or DEFAULT_INIT_STD)


@torch.no_grad()
def init_new_params(model: nn.Module, names: list[str], seed: int, std: float) -> None:
    """Overwrite the parameters ``names`` of ``model`` in place from the counter generator."""
    owners = _named_param_owners(model)
    for name in names:
        module, attr = owners[name]
        p = module._parameters[attr]
        is_norm = "norm" in type(module).__name__.lower()
        if attr == "bias" or name.endswith(".bias"):
            value = torch.zeros(p.numel())
        elif is_norm and attr == "weight":
            value = torch.ones(p.numel())
        else:
            value = rng.normal(seed, f"init/{name}", p.numel()) * std
        p.copy_(value.view(p.shape).to(p.dtype))
