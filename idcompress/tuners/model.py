"""``IntrinsicModel``: PEFT's tuner for the ``INTRINSIC`` method (θ = θ₀ + P·θ_d).

Like PEFT's ``LoraModel`` it wraps the base in place and lives at ``peft_model.base_model``; the
object users get from :func:`get_intrinsic_model`, ``peft.get_peft_model`` or
:meth:`IntrinsicModel.from_pretrained` is PEFT's own ``PeftModel`` (``PeftModelForCausalLM`` for
``task_type="CAUSAL_LM"``, …), so ``generate``, ``disable_adapter()``, ``print_trainable_parameters()``,
``transformers.Trainer`` and ``AutoPeftModel*`` work as for any PEFT method.

The base keeps its parameters (θ₀, frozen); :class:`~.compose.Composer` composes each tuned tensor
when its module runs. The trained numbers ``theta_d`` (and SAID's ``said_lambda``) live in one
:class:`IntrinsicLayer` (PEFT's status tools and ``disable_adapter`` look for such a layer) and
map to the checkpoint keys ``theta_d`` / ``said_lambda`` in both directions. One adapter per model.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from torch import nn

from ..checkpoint.fingerprint import FingerprintMismatchError, fingerprint
from ..checkpoint.format import (
    DTYPES,
    SINGLE_FILE_SUFFIX,
    check_rng,
    check_vectors,
    vector_lengths,
    vector_tensors,
    write_checkpoint,
)
from ..checkpoint.integrity import DIGEST_FIELD, checkpoint_digest, mismatch_allowed, verify_digest
from ..models import canonical_base_name
from ..names import PREFIX
from ..projection import Projection, make_projection
from .compose import Composer
from .config import IntrinsicConfig
from .init import init_new_params, init_std_for, resolve_new_params
from .layout import Layout, build_layout

LAYER_ATTR = "intrinsic_layer"
_VECTORS = (("theta_d", "intrinsic_theta_d"), ("said_lambda", "intrinsic_lambda"))
_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


class IntrinsicLayer(nn.Module, BaseTunerLayer):
    """Holds ``theta_d`` and ``said_lambda`` per adapter. It wraps no layer of the base: the whole
    base is re-parametrised (see :mod:`.compose`)."""

    adapter_layer_names = ("intrinsic_theta_d", "intrinsic_lambda")
    other_param_names = ()

    def __init__(self, adapter_name: str, theta_d: torch.Tensor, said_lambda: torch.Tensor | None) -> None:
        super().__init__()
        self.intrinsic_theta_d = nn.ParameterDict({adapter_name: nn.Parameter(theta_d)})
        self.intrinsic_lambda = nn.ParameterDict(
            {} if said_lambda is None else {adapter_name: nn.Parameter(said_lambda)}
        )
        self._active_adapter = adapter_name
        self._disable_adapters = False
        self.merged_adapters = []
        self.composer: Composer | None = None

    @property
    def theta_d(self) -> nn.Parameter:
        return self.intrinsic_theta_d[self._active_adapter]

    @property
    def said_lambda(self) -> nn.Parameter | None:
        return self.intrinsic_lambda[self._active_adapter] if self._active_adapter in self.intrinsic_lambda else None

    def enable_adapters(self, enabled: bool) -> None:
        self._disable_adapters = not enabled
        if self.composer is not None:
            self.composer.active = enabled
            self.composer.clear_cache()

    def _move_adapter_to_device_of_base_layer(self, *args, **kwargs) -> None:
        return None  # the vectors move with the model; the composer follows θ₀'s device

    # BaseTunerLayer.weight/.bias read the wrapped layer's; there is none
    @property
    def weight(self):
        raise AttributeError("IntrinsicLayer wraps no layer and has no weight")

    @property
    def bias(self):
        raise AttributeError("IntrinsicLayer wraps no layer and has no bias")


class IntrinsicModel(BaseTuner):
    """PEFT tuner: the base re-parametrised as θ_t = θ₀_t + λ_t·(P θ_d)_t (one adapter).

    Attributes (also reachable from the ``PeftModel`` around it): ``theta_d``, ``said_lambda``
    (SAID only, else None), ``layout`` (the tuned tensors), ``projection`` (P), ``intrinsic_config``.
    """

    prefix = PREFIX
    tuner_layer_cls = IntrinsicLayer
    target_module_mapping: dict = {}
    uses_shared_state = True  # θ_d and P live in the tuner, not in layers injected into the base

    # -- building ---------------------------------------------------------------------------------
    def inject_adapter(self, model: nn.Module, adapter_name: str, *args, **kwargs) -> None:
        if LAYER_ATTR in self._modules:
            raise ValueError(
                "idcompress supports one adapter per model (it re-parametrises the whole base); "
                f"cannot add {adapter_name!r} next to {self._modules[LAYER_ATTR]._active_adapter!r}"
            )
        cfg: IntrinsicConfig = self.peft_config[adapter_name]
        if not isinstance(cfg, IntrinsicConfig):
            raise TypeError(f"IntrinsicModel needs an IntrinsicConfig, got {type(cfg).__name__}")
        # filled in below (D, layout, fingerprint, …): the caller's object stays reusable
        cfg = self.peft_config[adapter_name] = copy.deepcopy(cfg)
        source = getattr(cfg, "_source", None) or "IntrinsicConfig"
        cfg.validate()
        check_rng(cfg.rng, source)
        if cfg.base_model_name_or_path is None:
            cfg.base_model_name_or_path = model.__dict__.get("name_or_path") or None
        cfg.base_model_name_or_path = canonical_base_name(cfg.base_model_name_or_path)

        layout = build_layout(model, cfg.include, cfg.exclude)
        if cfg.layout_digest is not None:
            _check_layout(layout, cfg, getattr(cfg, "_layout_names", None), source)
        D, m = layout.D, layout.m
        n_theta, _ = vector_lengths(cfg.projection, cfg.d, m)
        if n_theta > D:
            raise ValueError(f"d={cfg.d} is larger than D={D}, the number of tuned parameters")
        # built before the base is touched, so a refused size costs nothing
        projection = make_projection(cfg.projection_kind, n_theta, D, cfg.seed)

        new_names = resolve_new_params(model, cfg.init_new)
        init_new_params(model, new_names, cfg.seed, init_std_for(model, cfg.init_std))
        cfg.init_new = new_names
        cfg.D, cfg.num_tensors, cfg.layout_digest = D, m, layout.digest()
        fp = fingerprint(model, new_names)
        if cfg.base_fingerprint and fp != cfg.base_fingerprint:
            # the model at hand (not the one the checkpoint names: that is the base it was tuned on)
            own = canonical_base_name(model.__dict__.get("name_or_path") or None)
            base_desc = own or cfg.base_model_name_or_path or type(model).__name__
            msg = (f"base model {base_desc!r} has fingerprint {fp}, but checkpoint {source} was tuned on "
                   f"a base with fingerprint {cfg.base_fingerprint}")
            if not getattr(cfg, "allow_fingerprint_mismatch", False):
                raise FingerprintMismatchError(msg + "; pass allow_fingerprint_mismatch=True (CLI: --force) to load it anyway")
            warnings.warn("LOADING ONTO A DIFFERENT BASE: " + msg, stacklevel=4)
        cfg.base_fingerprint = cfg.base_fingerprint or fp

        first = layout.entries[0]
        device = first.owners[0][0]._parameters[first.owners[0][1]].device
        self._requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
        for p in model.parameters():
            p.requires_grad_(False)
        lam = torch.ones(m, device=device) if cfg.is_said else None
        layer = IntrinsicLayer(adapter_name, torch.zeros(n_theta, device=device), lam)
        setattr(self, LAYER_ATTR, layer)
        layer.composer = Composer(layout, projection, layer)
        self.set_requires_grad(adapter_name, not cfg.inference_mode)
        # DDP: never broadcast or all-reduce the frozen base (names as seen from a PeftModel,
        # from this tuner and from the bare model: names that match nothing are ignored)
        names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
        names += [n for n, _ in model.named_buffers(remove_duplicate=False)]
        self._ddp_params_and_buffers_to_ignore = (
            names + [f"model.{n}" for n in names] + [f"base_model.model.{n}" for n in names]
        )

    def _create_and_replace(self, *args, **kwargs):
        raise NotImplementedError("IntrinsicModel re-parametrises whole tensors and replaces no module")

    def _prepare_adapter_config(self, peft_config, model_config):
        return peft_config

    def _cast_adapter_dtype(self, adapter_name: str, autocast_adapter_dtype: bool = True) -> None:
        return None  # θ_d stays float32: the projection is computed in float32

    def _check_new_adapter_config(self, config) -> None:
        if len(self.peft_config) > 1:
            raise ValueError("idcompress supports one adapter per model")

    # -- what users read ----------------------------------------------------------------------------
    @property
    def _layer(self) -> IntrinsicLayer:
        return self._modules[LAYER_ATTR]

    @property
    def composer(self) -> Composer:
        return self._layer.composer

    @property
    def theta_d(self) -> nn.Parameter:
        return self._layer.theta_d

    @property
    def said_lambda(self) -> nn.Parameter | None:
        return self._layer.said_lambda

    @property
    def layout(self) -> Layout:
        return self.composer.layout

    @property
    def projection(self) -> Projection:
        return self.composer.projection

    @property
    def intrinsic_config(self) -> IntrinsicConfig:
        return self.peft_config[self._layer._active_adapter]

    @property
    def recompute(self) -> bool:
        """Recompose weights in backward instead of keeping them (less memory, one more composition);
        large ``nn.Linear`` / ``nn.Embedding`` weights are streamed in row chunks (docs/design.md,
        "Memory")."""
        return self.composer.recompute

    @recompute.setter
    def recompute(self, value: bool) -> None:
        self.composer.recompute = bool(value)

    def composed(self, name: str) -> torch.Tensor:
        """θ₀ + λ·Pθ_d of the tuned parameter ``name`` (differentiable when grad is enabled)."""
        names = self.layout.names
        if name not in names:
            raise KeyError(f"{name!r} is not a tuned parameter (first ones: {names[:5]})")
        return self.composer.compose(names.index(name))

    # -- PEFT plumbing ----------------------------------------------------------------------------
    def _enable_adapter_layers(self, enabled: bool = True) -> None:
        self._layer.enable_adapters(enabled)

    def set_requires_grad(self, adapter_names, requires_grad: bool = True) -> None:
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        for name in names:
            if name not in self._layer.intrinsic_theta_d:
                raise ValueError(f"adapter {name!r} does not exist; this model has {list(self._layer.intrinsic_theta_d)}")
            self._layer.intrinsic_theta_d[name].requires_grad_(requires_grad)
            if name in self._layer.intrinsic_lambda:
                self._layer.intrinsic_lambda[name].requires_grad_(requires_grad)

    def set_adapter(self, adapter_name, inference_mode: bool = False) -> None:
        self.set_requires_grad(adapter_name, not inference_mode)

    def _mark_only_adapters_as_trainable(self, model: nn.Module) -> None:
        for p in model.parameters():
            p.requires_grad_(False)

    def merge_adapter(self, *args, **kwargs) -> None:
        raise NotImplementedError("an idcompress adapter cannot be merged reversibly; use merge_and_unload()")

    def unmerge_adapter(self, *args, **kwargs) -> None:
        raise NotImplementedError("an idcompress adapter cannot be merged reversibly; use merge_and_unload()")

    def delete_adapter(self, adapter_name: str) -> None:
        raise NotImplementedError("an idcompress adapter cannot be deleted in place; use unload()")

    @torch.no_grad()
    def merge_and_unload(self, progressbar: bool = False, safe_merge: bool = False, adapter_names=None) -> nn.Module:
        """The base model (its own class) with θ₀ + λ·Pθ_d written into its parameters."""
        composer = self.composer
        composer.inference_cache = False
        values = []
        for i, e in enumerate(self.layout.entries):
            t = composer.compose(i)
            if safe_merge and not torch.isfinite(t).all():
                raise ValueError(f"merging would write NaN/Inf into {e.name!r}")
            values.append(t) if safe_merge else composer.parameter(i).copy_(t)
        for i, t in enumerate(values):
            composer.parameter(i).copy_(t)
        return self._unload()

    def unload(self) -> nn.Module:
        """The base model with θ₀ in place (the tuning discarded)."""
        return self._unload()

    def _unload(self) -> nn.Module:
        self.composer.remove()
        model = self.model
        for name, p in model.named_parameters():
            p.requires_grad_(self._requires_grad.get(name, True))
        del self._modules[LAYER_ATTR]
        if "peft_config" in model.__dict__:
            del model.peft_config
        return model

    # -- state dict <-> checkpoint keys (PEFT's hooks) ----------------------------------------------
    @classmethod
    def _model_key(cls, model, adapter_name: str, attr: str) -> str:
        return f"{_tuner_prefix(model)}{LAYER_ATTR}.{attr}.{adapter_name}"

    @classmethod
    def _get_adapter_state_dict(cls, model, config, adapter_name, state_dict, unwanted_adapter_names):
        dtype = DTYPES[config.vector_dtype]
        out, named = {}, {}
        for ckpt, attr in _VECTORS:
            key = cls._model_key(model, adapter_name, attr)
            if key in state_dict:
                out[key] = named[ckpt] = state_dict[key].detach().to("cpu", dtype).contiguous()
        # PEFT writes the config after this: record the digest of what it is about to write
        data = {k: v for k, v in config.to_dict().items() if k != DIGEST_FIELD}
        config.digest = checkpoint_digest(data, named)
        return out

    @classmethod
    def _remove_adapter_name_from_key(cls, key: str, adapter_name: str) -> str:
        for ckpt, attr in _VECTORS:
            if key.endswith(f"{LAYER_ATTR}.{attr}.{adapter_name}"):
                return ckpt
        return super()._remove_adapter_name_from_key(key, adapter_name)

    @classmethod
    def _remap_adapter_state_dict_for_load(cls, model, config, adapter_name, state_dict):
        source = f"{getattr(config, '_source', None) or 'checkpoint'} (adapter_model.safetensors)"
        dtypes = {k: _ST_DTYPES.get(v.dtype, str(v.dtype)) for k, v in state_dict.items()}
        verify_digest(config.to_dict(), state_dict, source, mismatch_allowed())
        theta, lam = check_vectors(config.to_dict(), state_dict, dtypes, source)
        out = {cls._model_key(model, adapter_name, "intrinsic_theta_d"): theta}
        if lam is not None:
            out[cls._model_key(model, adapter_name, "intrinsic_lambda")] = lam
        return out

    # -- checkpoints --------------------------------------------------------------------------------
    def save_pretrained(self, save_directory, single_file: bool = False, overwrite: bool = False, **_) -> Path:
        """Write the tiny checkpoint (a PEFT-layout directory, or one ``*.idc.safetensors``); atomic."""
        return save_checkpoint(self, save_directory, single_file=single_file, overwrite=overwrite)

    @classmethod
    def from_pretrained(
        cls,
        path_or_id,
        base_model: nn.Module | str | None = None,
        revision: str | None = None,
        allow_fingerprint_mismatch: bool = False,
        device=None,
        cache_dir=None,
        is_trainable: bool = True,
        allow_integrity_mismatch: bool | None = None,
        **model_kwargs,
    ):
        """Rebuild a tuned model (a ``peft.PeftModel``) from a checkpoint directory, ``*.idc.safetensors``
        or hub repo id.

        ``base_model``: a model, or a name (folder, hub id, short name) used instead of the
        recorded one. Without it the base is resolved from the checkpoint (a packaged model by its
        hub id when the fingerprint matches, a local folder, or a hub id + ``revision``); P and new
        heads are regenerated from the seed; a base with another fingerprint is refused unless
        ``allow_fingerprint_mismatch``; a file whose integrity digest does not match is refused
        unless ``allow_integrity_mismatch`` (both warn loudly). ``is_trainable=False`` freezes θ_d
        (PEFT's default).
        """
        from ..checkpoint.hub import checkpoint_in_folder, resolve_checkpoint
        from ..models.loading import load_base_model
        from .loading import base_candidates, read_config

        path = resolve_checkpoint(path_or_id, revision=revision, cache_dir=cache_dir)
        if path.is_dir():
            path = checkpoint_in_folder(path)
        cfg, files = read_config(path, allow_integrity_mismatch)
        cfg.allow_fingerprint_mismatch = allow_fingerprint_mismatch
        cfg.inference_mode = not is_trainable
        if base_model is not None:  # a model, or a name used instead of the recorded one
            bases = [base_model]
        else:
            if not cfg.base_model_name_or_path:
                raise ValueError(f"{files.source}: no base_model_name_or_path in the config; pass base_model=")
            bases = base_candidates(cfg.base_model_name_or_path)
        for i, base in enumerate(bases):
            if isinstance(base, str):
                base = load_base_model(
                    base, task_type=cfg.task_type, num_labels=cfg.num_labels, label_names=cfg.label_names,
                    problem_type=cfg.problem_type, revision=revision or cfg.revision, **model_kwargs,
                )
            if device is not None:
                base = base.to(device)
            try:
                model = get_intrinsic_model(base, cfg)  # the adapter fills a copy: cfg stays as read
                break
            except FingerprintMismatchError:
                if i + 1 == len(bases):
                    raise
        tuner = tuner_of(model)
        with torch.no_grad():
            tuner.theta_d.copy_(files.theta_d)
            if files.said_lambda is not None:
                tuner.said_lambda.copy_(files.said_lambda)
        return model

    def extra_repr(self) -> str:
        c = self.intrinsic_config
        return f"projection={c.projection}, d={c.d}, D={self.layout.D}, m={self.layout.m}, seed={c.seed}"


def _tuner_prefix(model) -> str:
    """State-dict prefix of the tuner inside ``model`` (``"base_model."`` in a ``PeftModel``)."""
    if isinstance(model, IntrinsicModel):
        return ""
    for name, module in model.named_modules():
        if isinstance(module, IntrinsicModel):
            return name + "."
    raise ValueError(f"{type(model).__name__} holds no idcompress adapter")


def tuner_of(model) -> IntrinsicModel:
    """The :class:`IntrinsicModel` of a ``PeftModel`` (or the tuner itself)."""
    if isinstance(model, IntrinsicModel):
        return model
    inner = getattr(model, "base_model", None)
    if isinstance(inner, IntrinsicModel):
        return inner
    raise TypeError(f"{type(model).__name__} is not an idcompress model (no IntrinsicModel inside)")


def _check_layout(layout: Layout, cfg: IntrinsicConfig, layout_names: list[str] | None, source: str) -> None:
    if layout.digest() == cfg.layout_digest:
        return
    have = layout.names
    detail = ""
    if layout_names is not None:
        missing = [n for n in layout_names if n not in set(have)]
        extra = [n for n in have if n not in set(layout_names)]
        if missing:
            detail += f"; missing from the base: {missing[:10]}" + (" …" if len(missing) > 10 else "")
        if extra:
            detail += f"; not in the checkpoint: {extra[:10]}" + (" …" if len(extra) > 10 else "")
        if not missing and not extra:
            detail += "; same tensor names, but their shapes, dtypes or order differ"
    raise ValueError(
        f"{source}: the base model's layout (D={layout.D}, {layout.m} tensors) differs from the "
        f"checkpoint's (D={cfg.D}, {cfg.num_tensors} tensors){detail}"
    )


def save_checkpoint(model, path, single_file: bool = False, overwrite: bool = False) -> Path:
    """Write ``model``'s checkpoint (a ``PeftModel`` of this method, or its tuner) to ``path``: a
    directory in PEFT's layout, or with ``single_file`` one ``*.idc.safetensors``. Atomic; an
    existing non-empty target is refused unless ``overwrite``."""
    tuner = tuner_of(model)
    cfg = tuner.intrinsic_config
    tensors = vector_tensors(tuner.theta_d, tuner.said_lambda, cfg.vector_dtype)
    path = Path(path)
    if single_file and not path.name.endswith(SINGLE_FILE_SUFFIX):
        raise ValueError(f"a single-file checkpoint must be named *{SINGLE_FILE_SUFFIX}, got {path.name!r}")
    written = write_checkpoint(path, cfg.to_dict(), tensors, tuner.layout.names, single_file=single_file,
                               overwrite=overwrite)
    cfg.digest = written[DIGEST_FIELD]
    return path


def get_intrinsic_model(model: nn.Module, config: IntrinsicConfig, adapter_name: str = "default"):
    """Wrap ``model`` so that its only trainable numbers are a ``config.d``-dimensional vector.

    Returns PEFT's model class for ``config.task_type`` (``PeftModel`` when there is none), as
    ``peft.get_peft_model`` does; unlike it, a ``base_model_name_or_path`` given in the config is
    kept (packaged models are recorded under their hub id).
    """
    from peft.mapping_func import MODEL_TYPE_TO_PEFT_MODEL_MAPPING
    from peft.peft_model import PeftModel

    if isinstance(model, IntrinsicModel) or isinstance(getattr(model, "base_model", None), IntrinsicModel):
        raise ValueError("model is already an idcompress model")
    cls = MODEL_TYPE_TO_PEFT_MODEL_MAPPING.get(config.task_type, PeftModel)
    return cls(model, config, adapter_name)


def push_to_hub(model, repo_id: str, private: bool | None = None, token: str | None = None,
                commit_message: str = "Upload idcompress checkpoint", single_file: bool = False) -> str:
    """Upload ``model``'s tiny checkpoint (no model card) to the hub repo ``repo_id``
    (``owner/name``, or ``name`` under the token's user); returns the commit URL.

    ``single_file``: one ``model.idc.safetensors`` instead of PEFT's two files.
    """
    import tempfile

    from ..checkpoint.hub import upload_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / ("model" + SINGLE_FILE_SUFFIX if single_file else "ckpt")
        save_checkpoint(tuner_of(model), target, single_file=single_file)  # PEFT's writer has no single file
        return upload_checkpoint(target, repo_id, private=private, token=token,
                                 commit_message=commit_message)
