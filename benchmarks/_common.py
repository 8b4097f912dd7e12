"""Shared pieces of the training-step benchmarks: models, methods, inputs and the timed step.

A *method* is ``"full"`` (full fine-tuning), ``"lora"`` (PEFT LoRA, r=8, alpha=16, no dropout,
target query/value), ``"vera"`` (PEFT VeRA, r=256, target query/value) or ``"KIND:d"`` with KIND
one of idcompress' ``said``/``fastfood``/``dense``/``sparse`` (e.g. ``"said:1e3"``). A *model* is
``"minilm-l6"`` (the packaged pretrained all-MiniLM-L6-v2 with a new 2-class head) or a name of
``CONFIGS`` (a BERT/RoBERTa classifier built from a config, random weights: timing only).

One step is forward + backward + ``AdamW.step()`` + ``zero_grad(set_to_none=True)`` on the same
fixed batch (random token ids from ``torch.Generator().manual_seed(seed)``, all-ones attention mask,
random 0/1 labels). AdamW is torch's ``fused`` implementation by default, as in the Hugging Face
Trainer (``optim="adamw_torch_fused"``); on 2 CPU cores the per-tensor loop that ``torch.optim.AdamW``
picks by default for CPU tensors is ~30× slower on 22.7M parameters (2 s vs 65 ms) and would
flatter every parameter-efficient method.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # every method's child runs with the same OpenMP policy idcompress sets (see idcompress/__init__.py)
    "OMP_WAIT_POLICY": "PASSIVE",
}
IDC_KINDS = ("said", "fastfood", "dense", "sparse")
PEFT_METHODS = ("lora", "vera")

# name -> (architecture, hidden size, layers); heads = hidden/64, intermediate = 4·hidden
CONFIGS: dict[str, tuple[str, int, int]] = {
    "bert-h256-l4": ("bert", 256, 4),
    "bert-h512-l8": ("bert", 512, 8),
    "bert-h768-l12": ("bert", 768, 12),  # BERT-base shape
    "roberta-base": ("roberta", 768, 12),  # RoBERTa-base shape (vocab 50265)
}


def set_offline_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default ``os.environ``) with the hub-offline variables set; returns it."""
    env = os.environ if env is None else env
    for k, v in OFFLINE_ENV.items():
        env.setdefault(k, v)
    return env


# -- methods ------------------------------------------------------------------------------------
def parse_method(spec: str) -> tuple[str, int | None]:
    """``"said:1e3"`` → ``("said", 1000)``; ``"full"``/``"lora"``/``"vera"`` → ``(name, None)``."""
    name, _, d = spec.strip().lower().partition(":")
    if name in ("full", *PEFT_METHODS):
        if d:
            raise ValueError(f"method {spec!r}: {name!r} takes no ':d'")
        return name, None
    if name not in IDC_KINDS:
        raise ValueError(
            f"method {spec!r} is unknown; use full, lora, vera or KIND:d with KIND in {list(IDC_KINDS)}"
        )
    try:
        dv = float(d)
    except ValueError:
        raise ValueError(f"method {spec!r}: expected {name}:d with d a number such as 1e3") from None
    if dv <= 0 or dv != int(dv):
        raise ValueError(f"method {spec!r}: d must be a positive integer, got {d!r}")
    return name, int(dv)


def method_label(name: str, d: int | None) -> str:
    return name if d is None else f"{name}:{d}"


# -- models -------------------------------------------------------------------------------------
def build_model(name: str, num_labels: int = 2, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """The classifier ``name`` (``"minilm-l6"`` or a key of ``CONFIGS``) on the CPU."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if name == "minilm-l6":
        from idcompress.models.loading import load_base_model

        model = load_base_model("minilm-l6", "SEQ_CLS", num_labels=num_labels)
    elif name in CONFIGS:
        model = _from_config(name, num_labels)
    else:
        raise ValueError(f"model {name!r} is unknown; use 'minilm-l6' or one of {sorted(CONFIGS)}")
    if dtype is not None:
        model = model.to(dtype)
    return model


def model_config(name: str, num_labels: int = 2):
    """The transformers config of a ``CONFIGS`` entry."""
    arch, hidden, layers = CONFIGS[name]
    common = dict(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
        intermediate_size=4 * hidden, num_labels=num_labels,
    )
    if arch == "roberta":
        from transformers import RobertaConfig

        return RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
                             pad_token_id=1, bos_token_id=0, eos_token_id=2, **common)
    from transformers import BertConfig

    return BertConfig(vocab_size=30522, max_position_embeddings=512, **common)


def _from_config(name: str, num_labels: int) -> torch.nn.Module:
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_config(model_config(name, num_labels))


def vocab_size(model: torch.nn.Module) -> int:
    return int(model.config.vocab_size)


# -- wrapping -----------------------------------------------------------------------------------
class Refused(Exception):
    """The adapter refused the size (a ``ValueError`` from idcompress); the message says why."""


def wrap(model: torch.nn.Module, name: str, d: int | None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Apply method ``name`` to ``model``; returns the model to train and facts about it.

    Facts: ``trainable`` (numbers the optimizer updates), ``D`` (parameters tuned, for
    idcompress the layout size, for full FT all parameters), ``state_bytes`` (tensors the method
    keeps for its fixed random projection: idcompress ``projection.state_bytes()``, VeRA's shared
    ``vera_A``/``vera_B``; None otherwise), ``backend`` (Fastfood's, when it says).
    Raises ``Refused`` when idcompress rejects the size.
    """
    info: dict[str, Any] = {"state_bytes": None, "backend": None}
    if name == "full":
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        info.update(trainable=n, D=n)
        return model, info
    if name in PEFT_METHODS:
        from peft import LoraConfig, VeraConfig, get_peft_model

        if name == "lora":
            cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["query", "value"],
                             task_type="SEQ_CLS")
        else:
            cfg = VeraConfig(r=256, target_modules=["query", "value"], task_type="SEQ_CLS")
        model = get_peft_model(model, cfg)
        info["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        info["D"] = None
        if name == "vera":
            seen, total = set(), 0
            for bname, b in model.named_buffers():
                if ("vera_A" in bname or "vera_B" in bname) and b.data_ptr() not in seen:
                    seen.add(b.data_ptr())
                    total += b.numel() * b.element_size()
            info["state_bytes"] = total
        return model, info
    from idcompress import IntrinsicConfig, get_intrinsic_model

    try:
        model = get_intrinsic_model(model, IntrinsicConfig(d=d, projection=name))
    except ValueError as e:
        raise Refused(str(e)) from None
    proj = model.projection
    info.update(
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        D=model.layout.D,
        state_bytes=int(proj.state_bytes()),
    )
    uses_numba = getattr(proj, "uses_numba", None)
    if callable(uses_numba):
        info["backend"] = "numba" if uses_numba() else "torch"
    return model, info


# -- inputs and steps ---------------------------------------------------------------------------
def make_batch(vocab: int, batch: int, seq: int, seed: int = 0, device="cpu") -> dict[str, torch.Tensor]:
    """A fixed classification batch: token ids in [5, vocab), mask of ones, labels in {0, 1}."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, seq), generator=g)
    labels = torch.randint(0, 2, (batch,), generator=g)
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones(batch, seq, dtype=torch.long, device=device),
        "labels": labels.to(device),
    }


ADAMW_IMPLS = ("fused", "foreach", "loop")


def make_optimizer(model: torch.nn.Module, impl: str = "fused", lr: float = 1e-4) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; ``impl`` fused (HF Trainer's default), foreach or loop."""
    if impl not in ADAMW_IMPLS:
        raise ValueError(f"AdamW impl={impl!r} is unknown; choose one of {list(ADAMW_IMPLS)}")
    params = [p for p in model.parameters() if p.requires_grad]
    kw = {"fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}[impl]
    return torch.optim.AdamW(params, lr=lr, **kw)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(model, opt, batch, device: torch.device, autocast_dtype=None) -> tuple[float, float, float]:
    """One forward + backward + optimizer step + zero_grad; returns (fwd, bwd, opt) seconds."""
    ctx = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else nullcontext())
    _sync(device)
    t0 = time.perf_counter()
    with ctx:
        loss = model(**batch).loss
    _sync(device)
    t1 = time.perf_counter()
    loss.backward()
    _sync(device)
    t2 = time.perf_counter()
    opt.step()
    opt.zero_grad(set_to_none=True)
    _sync(device)
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2


def time_steps(model, opt, batch, device: torch.device, warmup: int, steps: int,
               autocast_dtype=None) -> dict[str, Any]:
    """``warmup`` untimed steps, then ``steps`` timed ones; medians in milliseconds.

    ``step_ms`` is wall time; ``cpu_ms`` the CPU time of the process (all threads) in the step,
    less sensitive to other processes competing for the cores (but it counts spin-waiting).
    """
    for _ in range(warmup):
        train_step(model, opt, batch, device, autocast_dtype)
    phases, cpu = [], []
    for _ in range(steps):
        c0 = time.process_time()
        phases.append(train_step(model, opt, batch, device, autocast_dtype))
        cpu.append(time.process_time() - c0)
    totals = [sum(p) for p in phases]
    med = lambda xs: 1e3 * statistics.median(xs)  # noqa: E731
    return {
        "step_ms": med(totals),
        "cpu_ms": med(cpu),
        "fwd_ms": med([p[0] for p in phases]),
        "bwd_ms": med([p[1] for p in phases]),
        "opt_ms": med([p[2] for p in phases]),
        "step_ms_all": [1e3 * t for t in totals],
    }


# -- formatting ---------------------------------------------------------------------------------
def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; numbers right-aligned."""
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda vals: "| " + " | ".join(v.rjust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in cells)])


def _cell(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def fmt_bytes(n: int | None) -> str | None:
    if n is None:
        return None
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return None
