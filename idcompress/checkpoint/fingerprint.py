"""Base-model identity: a digest of the pretrained tensors θ₀ (``docs/design.md``, "Base identity").

``sha256`` over, for every parameter and persistent buffer of the base model in sorted name
order — except the parameters initialised from the seed (``config.init_new``) — the line
``name|shape|dtype`` followed by the tensor's raw bytes (little-endian, row-major). Above
``SAMPLE_ABOVE`` elements a tensor contributes a documented sample instead of all its bytes: its
numel, and 4,096 evenly spaced elements (index ``⌊i·numel/4096⌋``), so fingerprinting a
multi-billion-parameter model stays cheap. Result: ``"sha256:<hex>"``.
"""

from __future__ import annotations

import hashlib

import torch

SAMPLE_ABOVE = 2**27  # elements per tensor
SAMPLE_POINTS = 4096


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach()
    if t.numel() > SAMPLE_ABOVE:
        idx = (torch.arange(SAMPLE_POINTS, dtype=torch.int64) * t.numel()) // SAMPLE_POINTS
        t = t.reshape(-1)[idx.to(t.device)]
    return t.contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()


def fingerprint(model, skip=()) -> str:
    """Fingerprint of a base model's weights: its parameters (θ₀ of the tuned ones) and persistent
    buffers, except the names in ``skip`` (the parameters initialised from the seed).

    Tied parameters count once, under their first name; a wrapped model gives the fingerprint of
    its base (the base keeps θ₀ in its parameters).
    """
    skip = set(skip or ())
    tensors: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        tensors[name] = p
    all_params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    for name, b in model.state_dict(keep_vars=True).items():
        if name not in tensors and name not in all_params and isinstance(b, torch.Tensor):
            tensors[name] = b
    h = hashlib.sha256()
    for name in sorted(tensors):
        if name in skip:
            continue
        t = tensors[name]
        h.update(f"{name}|{list(t.shape)}|{str(t.dtype).removeprefix('torch.')}\n".encode())
        h.update(_tensor_bytes(t))
    return "sha256:" + h.hexdigest()


class FingerprintMismatchError(ValueError):
    """The base model is not the one the checkpoint was tuned on (its fingerprint differs)."""
