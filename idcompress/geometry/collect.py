"""Collect pooled per-layer hidden states of a model over a stream of batches.

Two ways in:

- **Hugging Face models** (or wrappers that forward keyword arguments to one): each batch, a dict
  of tensors, is passed as ``model(**batch, output_hidden_states=True)`` and the output's
  ``hidden_states`` (embedding output + one per layer) are pooled; an encoder-decoder model
  (T5), whose output has no ``hidden_states``, gives its ``encoder_hidden_states`` (the batch
  must then carry ``labels`` or ``decoder_input_ids`` for the decoder).
- **Any** ``nn.Module``: with ``module_names=[...]``, forward hooks capture the outputs of those
  submodules instead (first tensor of a tuple output; ``last_hidden_state`` of a model output).
  A batch is then passed as ``model(**batch)`` (dict), ``model(*batch)`` (tuple/list) or
  ``model(batch)`` (tensor).

Pooling, per state of shape:

- (B, T, h) tokens: ``"cls"`` = token 0 (refused when ``attention_mask[:, 0]`` is padding, i.e. a
  left-padded batch); ``"mean"`` = mean over the tokens whose ``attention_mask`` is 1 (over all
  tokens when the batch has no mask); ``"last"`` = the last token whose ``attention_mask`` is 1
  (the last token when there is no mask), the summary a causal LM builds.
- (B, C, H, W) feature maps (vision models): ``"mean"`` = global average pool over H, W;
  ``"cls"`` does not exist there and is refused.
- (B, h): already pooled, returned as is for every pooling.

Results are float32 CPU tensors, rows in batch order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

POOLINGS = ("cls", "mean", "last")
DEFAULT_POOLINGS = ("cls", "mean")  # "last" is asked for by causal LMs


def collect_hidden_states(
    model: nn.Module,
    batches: Iterable[Any],
    pooling: str | Sequence[str] = DEFAULT_POOLINGS,
    device: str | torch.device | None = None,
    *,
    module_names: Sequence[str] | None = None,
    progress: bool = True,
    desc: str = "hidden states",
) -> dict[str, list[torch.Tensor]]:
    """Run ``model`` over ``batches`` in eval mode without gradients; pool every layer's states.

    Returns ``{pooling: [Tensor(N, h_l) for each layer l]}``: for Hugging Face models layer 0 is
    the embedding output; with ``module_names`` the layers follow that list. ``device`` (default:
    the device of the model's first parameter) receives the batches; when given, the model is
    moved there too. Every submodule's train/eval mode is restored afterwards.
    """
    poolings = _check_poolings(pooling)
    device = _resolve_device(model, device)
    hooks = _Hooks(model, module_names) if module_names is not None else None
    chunks: dict[str, list[list[torch.Tensor]]] = {p: [] for p in poolings}
    total = len(batches) if hasattr(batches, "__len__") else None
    modes = [(m, m.training) for m in model.modules()]  # restored module by module
    model.eval()
    try:
        with torch.no_grad():
            for step, batch in enumerate(
                tqdm(batches, total=total, desc=desc, disable=not progress)
            ):
                batch = _to_device(batch, device)
                if hooks is not None:
                    states = hooks.run(batch)
                else:
                    states = _hf_hidden_states(model, batch)
                mask = batch.get("attention_mask") if isinstance(batch, Mapping) else None
                for p in poolings:
                    pooled = [_pool(h, mask, p, f"layer {i}") for i, h in enumerate(states)]
                    _append(chunks[p], pooled, step)
    finally:
        if hooks is not None:
            hooks.remove()
        for module, training in modes:
            module.train(training)
    if not chunks[poolings[0]]:
        raise ValueError("collect_hidden_states: batches is empty")
    return {p: [torch.cat(layer, dim=0) for layer in chunks[p]] for p in poolings}


def _check_poolings(pooling: str | Sequence[str]) -> tuple[str, ...]:
    poolings = (pooling,) if isinstance(pooling, str) else tuple(pooling)
    bad = [p for p in poolings if p not in POOLINGS]
    if not poolings or bad or len(set(poolings)) != len(poolings):
        raise ValueError(
            f"pooling must be one or more distinct names from {POOLINGS}, got {pooling!r}"
        )
    return poolings


def _resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        device = torch.device(device)
        model.to(device)
        return device
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _hf_hidden_states(model: nn.Module, batch: Any) -> Sequence[torch.Tensor]:
    if not isinstance(batch, Mapping):
        raise ValueError(
            "collect_hidden_states: batches for a Hugging Face model must be dicts of tensors "
            f"(input_ids, attention_mask, ...), got {type(batch).__name__}; "
            "pass module_names=[...] to collect from a plain nn.Module"
        )
    out = model(**batch, output_hidden_states=True)
    states = getattr(out, "hidden_states", None)
    if states is None and isinstance(out, Mapping):
        states = out.get("hidden_states")
    if states is None:  # encoder-decoder models: the encoder's states
        states = getattr(out, "encoder_hidden_states", None)
    if not states:
        raise ValueError(
            f"collect_hidden_states: the output of {type(model).__name__} has no hidden_states; "
            "pass module_names=[...] to collect submodule outputs through forward hooks"
        )
    return states


class _Hooks:
    """Forward hooks that capture the output of named submodules, one output per forward."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        if isinstance(names, str) or not names:
            raise ValueError(f"module_names must be a non-empty list of names, got {names!r}")
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            shown = ", ".join(list(modules)[1:21])
            raise ValueError(
                f"module_names: {missing} not found in {type(model).__name__}; "
                f"its submodules include: {shown}"
            )
        self.model, self.names = model, list(names)
        self.captured: dict[str, list[torch.Tensor]] = {n: [] for n in self.names}
        self.handles = [
            modules[n].register_forward_hook(self._capture(n)) for n in dict.fromkeys(self.names)
        ]

    def _capture(self, name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.captured[name].append(_first_tensor(output, name))

        return hook

    def run(self, batch: Any) -> list[torch.Tensor]:
        for v in self.captured.values():
            v.clear()
        if isinstance(batch, Mapping):
            self.model(**batch)
        elif isinstance(batch, (tuple, list)):
            self.model(*batch)
        else:
            self.model(batch)
        for n in self.names:
            if len(self.captured[n]) != 1:
                raise ValueError(
                    f"module_names: submodule {n!r} ran {len(self.captured[n])} times in one "
                    "forward pass; exactly once is needed"
                )
        return [self.captured[n][0] for n in self.names]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _first_tensor(output: Any, name: str) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    last = getattr(output, "last_hidden_state", None)
    if isinstance(last, torch.Tensor):
        return last
    values = output.values() if isinstance(output, Mapping) else output
    if isinstance(values, Iterable):
        for v in values:
            if isinstance(v, torch.Tensor):
                return v
    raise ValueError(
        f"module_names: submodule {name!r} returned no tensor ({type(output).__name__})"
    )


def _pool(h: torch.Tensor, mask: torch.Tensor | None, pooling: str, where: str) -> torch.Tensor:
    """One hidden state → float32 CPU (B, h); see the module doc for the rules."""
    h = h.float()
    if h.ndim == 2:
        pooled = h
    elif h.ndim == 3:
        if mask is not None and tuple(mask.shape) != tuple(h.shape[:2]):
            raise ValueError(
                f"{where}: attention_mask of shape {tuple(mask.shape)} does not match the "
                f"(batch, tokens) of a hidden state of shape {tuple(h.shape)}"
            )
        if pooling == "cls":
            if mask is not None and bool((mask[:, 0] == 0).any()):
                raise ValueError(
                    f"{where}: pooling 'cls' takes token 0, but attention_mask[:, 0] is padding "
                    "(a left-padded batch); pad on the right or use pooling='mean'"
                )
            pooled = h[:, 0]
        elif pooling == "last":
            if mask is None:
                pooled = h[:, -1]
            else:
                T = mask.shape[1]
                last = (T - 1) - mask.flip(1).to(torch.long).argmax(dim=1)
                pooled = h[torch.arange(h.shape[0], device=h.device), last.to(h.device)]
        elif mask is None:
            pooled = h.mean(dim=1)
        else:
            m = mask.to(h.dtype).unsqueeze(-1)
            pooled = (h * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
    elif h.ndim == 4:
        if pooling in ("cls", "last"):
            raise ValueError(
                f"{where}: pooling {pooling!r} is undefined for a (B, C, H, W) feature map of shape "
                f"{tuple(h.shape)}; use pooling='mean' (global average pool)"
            )
        pooled = h.mean(dim=(2, 3))
    else:
        raise ValueError(
            f"{where}: a hidden state must be (B, h), (B, T, h) or (B, C, H, W), "
            f"got shape {tuple(h.shape)}"
        )
    return pooled.detach().cpu()


def _append(layers: list[list[torch.Tensor]], pooled: list[torch.Tensor], step: int) -> None:
    if not layers:
        layers.extend([] for _ in pooled)
    if len(layers) != len(pooled):
        raise ValueError(
            f"batch {step} gave {len(pooled)} hidden states, earlier batches gave {len(layers)}"
        )
    for acc, t in zip(layers, pooled):
        acc.append(t)


class TokenizedTexts:
    """Re-iterable, sized stream of tokenized batches (dicts of tensors, padded on the right)."""

    def __init__(self, tokenizer: Any, texts: Sequence[str], batch_size: int, max_length: int):
        self.tokenizer, self.texts = tokenizer, texts
        self.batch_size, self.max_length = batch_size, max_length

    def __len__(self) -> int:
        return math.ceil(len(self.texts) / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for start in range(0, len(self.texts), self.batch_size):
            enc = self.tokenizer(
                self.texts[start : start + self.batch_size],
                padding=True,
                padding_side="right",  # so that token 0 is the first real token ("cls")
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            yield dict(enc)


def tokenize_texts(
    tokenizer: Any, texts: Sequence[str], batch_size: int = 128, max_length: int = 128
) -> TokenizedTexts:
    """Batches of ``batch_size`` texts tokenized to at most ``max_length`` tokens (re-iterable)."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise ValueError("tokenize_texts: texts must be a list of strings")
    if not texts:
        raise ValueError("tokenize_texts: texts is empty")
    for field, value in (("batch_size", batch_size), ("max_length", max_length)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"tokenize_texts: {field} must be a positive int, got {value!r}")
    return TokenizedTexts(tokenizer, list(texts), batch_size, max_length)
