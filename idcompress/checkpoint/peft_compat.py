"""PEFT integration: ``peft.PeftModel.from_pretrained(base, ckpt_dir)`` loads idcompress checkpoints.

What it registers with PEFT's method registry (``peft_type`` ``"INTRINSIC"``, method ``intrinsic``):

- a ``PeftType.INTRINSIC`` member (``PeftType`` is a plain ``str`` enum, extended only if missing);
- ``IntrinsicPeftConfig``: a ``PeftConfig`` carrying every ``IntrinsicConfig`` field (its
  ``to_dict`` writes exactly what ``IntrinsicModel.save_pretrained`` writes), plus the runtime-only
  ``allow_fingerprint_mismatch`` (``PeftModel.from_pretrained(..., allow_fingerprint_mismatch=True)``);
- ``IntrinsicTuner``: a ``BaseTuner`` that wraps the base with ``IntrinsicModel`` (the math lives
  there) under ``intrinsic.<adapter>``; ``theta_d``/``said_lambda`` map to the checkpoint's keys
  ``theta_d``/``said_lambda`` in both directions, validated like ``load_checkpoint_files`` does.
  The layout and fingerprint of the base are checked when the adapter is built. One adapter per
  model (the base is modified in place); ``merge_and_unload``/``unload``/``disable_adapter`` work.

When: importing this module never imports peft (that costs seconds on every CLI call). If peft is
already imported it registers at once; otherwise a one-shot import hook registers right after
``import peft`` finishes. Nothing here ever raises at import; problems surface when a checkpoint
is loaded through PEFT: a peft older than ``MIN_PEFT_VERSION`` (no per-tuner state-dict hooks)
gets a stub whose loading raises ``ImportError`` naming the installed version, and a peft newer
than the tested range loads with a warning.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import sys
import warnings
from typing import Any

MIN_PEFT_VERSION = "0.21.0"
TESTED_PEFT_VERSIONS = ("0.21.0", "0.21.2")  # oldest and newest version the tests ran on
PEFT_TYPE = "INTRINSIC"
METHOD_NAME = "intrinsic"
PREFIX = "intrinsic_"
LAYER_ATTR = "intrinsic_layer"  # model keys: ``base_model.intrinsic_layer.intrinsic_model.<adapter>.theta_d``
ADAPTERS_ATTR = "intrinsic_model"
VECTOR_KEYS = ("theta_d", "said_lambda")
_RUNTIME_FIELDS = ("allow_fingerprint_mismatch",)

_state: dict[str, Any] = {"status": None, "error": None, "classes": None, "warned": False}


# --------------------------------------------------------------------------------------------
# version policy
def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:3])


def unsupported_peft_message(version: str) -> str | None:
    """Why ``version`` of peft cannot load idcompress checkpoints, or ``None`` when it can."""
    if _version_tuple(version) >= _version_tuple(MIN_PEFT_VERSION):
        return None
    lo, hi = TESTED_PEFT_VERSIONS
    return (
        f"loading idcompress checkpoints through PEFT needs peft>={MIN_PEFT_VERSION} (tested {lo} to {hi}), "
        f"but peft {version} is installed; upgrade it (pip install -U 'peft>={MIN_PEFT_VERSION}') or load "
        "with idcompress.IntrinsicModel.from_pretrained(checkpoint, base_model=...)"
    )


def _warn_if_untested() -> None:
    import peft

    hi = TESTED_PEFT_VERSIONS[1]
    if _state["warned"] or _version_tuple(peft.__version__) <= _version_tuple(hi):
        return
    _state["warned"] = True
    warnings.warn(
        f"peft {peft.__version__} is newer than the versions idcompress was tested with "
        f"({TESTED_PEFT_VERSIONS[0]} to {hi}); if loading fails, use idcompress.IntrinsicModel.from_pretrained",
        stacklevel=3,
    )


class UnsupportedPeftConfig:
    """Stands in for the config class when PEFT cannot load our checkpoints; every use raises."""

    message = "PEFT support for idcompress is unavailable"

    def __init__(self, *args, **kwargs) -> None:
        raise ImportError(self.message)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        raise ImportError(cls.message)


def _install_stub(mapping: dict, key, message: str) -> type:
    stub = type("UnsupportedPeftConfig", (UnsupportedPeftConfig,), {"message": message})
    mapping[key] = stub
    return stub


# --------------------------------------------------------------------------------------------
# PeftType extension
def extend_peft_type(enum_cls, name: str = PEFT_TYPE):
    """Add member ``name`` (value ``name``) to the ``str`` enum ``enum_cls`` unless it exists."""
    if name in enum_cls.__members__:
        return enum_cls[name]
    member = str.__new__(enum_cls, name)
    member._name_ = name
    member._value_ = name
    member.__objclass__ = enum_cls
    member._sort_order_ = len(enum_cls._member_names_)
    type.__setattr__(enum_cls, name, member)  # EnumType.__setattr__ refuses new members
    enum_cls._member_map_[name] = member
    enum_cls._value2member_map_[name] = member
    enum_cls._member_names_.append(name)
    return member


# --------------------------------------------------------------------------------------------
# the PEFT classes (built on first registration: they subclass peft's)
def _make_classes():
    import torch
    from peft.config import PeftConfig
    from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
    from peft.utils.peft_types import PeftType, TaskType
    from torch import nn

    from ..tuners.config import IntrinsicConfig
    from ..tuners.model import IntrinsicModel
    from .fingerprint import fingerprint
    from .format import DTYPES, CheckpointFiles, _check_layout, _check_rng, _check_vectors

    peft_fields = {f.name for f in dataclasses.fields(PeftConfig)}
    intrinsic_fields = [f.name for f in dataclasses.fields(IntrinsicConfig)]
    own_fields = []
    for f in dataclasses.fields(IntrinsicConfig):
        if f.name in peft_fields:
            continue
        if f.default_factory is not dataclasses.MISSING:
            spec = dataclasses.field(default_factory=f.default_factory)
        else:
            spec = dataclasses.field(default=None if f.default is dataclasses.MISSING else f.default)
        own_fields.append((f.name, f.type, spec))
    own_fields.append(("allow_fingerprint_mismatch", "bool", dataclasses.field(default=False)))
    peft_task_types = {t.value for t in TaskType}
    st_dtypes = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}

    def __post_init__(self) -> None:
        task = getattr(self.task_type, "value", self.task_type)
        # tasks PEFT does not know (IMAGE_CLS) are kept for idcompress; PEFT sees task_type=None
        self._idc_task_type = task
        if task is not None and task not in peft_task_types:
            self.task_type = None
        PeftConfig.__post_init__(self)
        self.peft_type = PeftType.INTRINSIC
        self._idc_source = getattr(self, "_idc_source", None) or "adapter_config.json"
        self.to_intrinsic_config()  # validates every field

    def to_intrinsic_config(self) -> IntrinsicConfig:
        """The ``IntrinsicConfig`` this PEFT config stands for (``ValueError`` if malformed)."""
        data = {n: getattr(self, n) for n in intrinsic_fields}
        data["task_type"] = self._idc_task_type if self.task_type is None else self.task_type
        data["peft_type"] = PEFT_TYPE
        return IntrinsicConfig.from_dict(_plain(data), source=self._idc_source)

    def to_dict(self) -> dict[str, Any]:
        """What ``adapter_config.json`` holds: exactly ``IntrinsicConfig.to_dict()``."""
        return self.to_intrinsic_config().to_dict()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, subfolder=None, **kwargs):
        _warn_if_untested()
        config = PeftConfig.from_pretrained.__func__(cls, pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
        config._idc_source = str(pretrained_model_name_or_path) + (f"/{subfolder}" if subfolder else "")
        return config

    IntrinsicPeftConfig = dataclasses.make_dataclass(
        "IntrinsicPeftConfig",
        own_fields,
        bases=(PeftConfig,),
        namespace={
            "__post_init__": __post_init__,
            "to_intrinsic_config": to_intrinsic_config,
            "to_dict": to_dict,
            "from_pretrained": from_pretrained,
            "__doc__": "PEFT config of an idcompress adapter: every ``IntrinsicConfig`` field (see there).",
        },
    )

    class IntrinsicLayer(nn.Module, BaseTunerLayer):
        """Holds the ``IntrinsicModel`` per adapter; a ``BaseTunerLayer`` so that PEFT's status
        tools and ``disable_adapter()`` see it. It wraps no layer: the base is re-parametrised whole."""

        adapter_layer_names = (ADAPTERS_ATTR,)

        def __init__(self, adapter_name: str, im: IntrinsicModel) -> None:
            super().__init__()
            setattr(self, ADAPTERS_ATTR, nn.ModuleDict({adapter_name: im}))
            self._active_adapter = adapter_name
            self._disable_adapters = False
            self.merged_adapters = []

        @property
        def model(self) -> IntrinsicModel:
            return getattr(self, ADAPTERS_ATTR)[self._active_adapter]

        def enable_adapters(self, enabled: bool) -> None:
            self._disable_adapters = not enabled
            im = self.model
            if not enabled:
                im._install(im._theta0_views())
            im._cache_key = None

        def refresh(self) -> None:
            """Compose θ₀ + λ·Pθ_d into the base (cached while θ_d is unchanged under no_grad)."""
            if not self._disable_adapters:
                self.model._refresh()

        def _move_adapter_to_device_of_base_layer(self, *args, **kwargs) -> None:
            return None  # θ_d lives with θ₀ (IntrinsicModel moves them together)

        # BaseTunerLayer.weight/.bias read the wrapped layer's; there is none (they would recurse)
        @property
        def weight(self):
            raise AttributeError("IntrinsicLayer wraps no layer and has no weight")

        @property
        def bias(self):
            raise AttributeError("IntrinsicLayer wraps no layer and has no bias")

    class IntrinsicTuner(BaseTuner):
        """PEFT tuner around ``IntrinsicModel``: θ = θ₀ + P·θ_d for the wrapped base (one adapter)."""

        prefix = PREFIX
        tuner_layer_cls = IntrinsicLayer
        target_module_mapping: dict = {}
        uses_shared_state = True  # θ₀ and P live in the tuner, not in layers injected into the base

        # -- building ----------------------------------------------------------------------------
        def inject_adapter(self, model: nn.Module, adapter_name: str, *args, **kwargs) -> None:
            _warn_if_untested()
            if LAYER_ATTR in self._modules:
                raise ValueError(
                    f"idcompress supports one adapter per model (it re-parametrises the base in place); "
                    f"cannot add {adapter_name!r} next to {self._modules[LAYER_ATTR]._active_adapter!r}"
                )
            peft_cfg = self.peft_config[adapter_name]
            cfg = peft_cfg.to_intrinsic_config()
            _check_rng(cfg, peft_cfg._idc_source)
            if cfg.layout_digest is not None:
                _check_layout(model, cfg, CheckpointFiles(cfg, torch.empty(0), None, None, peft_cfg._idc_source))
            im = IntrinsicModel(model, cfg)
            _materialise(im)
            if cfg.base_fingerprint:
                _check_fingerprint(im, cfg, model, peft_cfg)
            for name in intrinsic_fields:
                if name not in ("task_type", "peft_type"):
                    setattr(peft_cfg, name, getattr(im.intrinsic_config, name))
            setattr(self, LAYER_ATTR, IntrinsicLayer(adapter_name, im))
            self._refresh_hook = model.register_forward_pre_hook(self._before_forward)
            self.set_requires_grad(adapter_name, not peft_cfg.inference_mode)

        def _create_and_replace(self, *args, **kwargs):
            raise NotImplementedError("IntrinsicTuner re-parametrises whole tensors and replaces no module")

        def _prepare_adapter_config(self, peft_config, model_config):
            return peft_config

        def _cast_adapter_dtype(self, adapter_name: str, autocast_adapter_dtype: bool = True) -> None:
            return None  # θ_d stays float32: the projection is computed in float32 (SPEC §2)

        # -- running -----------------------------------------------------------------------------
        @property
        def _layer(self) -> IntrinsicLayer:
            return self._modules[LAYER_ATTR]

        def _before_forward(self, module, args) -> None:
            # a hook on the base, so PEFT paths that call it directly (PeftModel.forward, generate) work
            self._layer.refresh()

        def _enable_adapter_layers(self, enabled: bool = True) -> None:
            self._layer.enable_adapters(enabled)

        @property
        def theta_d(self) -> nn.Parameter:
            return self._layer.model.theta_d

        @property
        def said_lambda(self) -> nn.Parameter | None:
            return self._layer.model.said_lambda

        def set_requires_grad(self, adapter_names, requires_grad: bool = True) -> None:
            names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
            adapters = getattr(self._layer, ADAPTERS_ATTR)
            for name in names:
                if name not in adapters:
                    raise ValueError(f"adapter {name!r} does not exist; this model has {list(adapters)}")
                for p in adapters[name].parameters(recurse=False):
                    p.requires_grad_(requires_grad)

        def set_adapter(self, adapter_name, inference_mode: bool = False) -> None:
            self.set_requires_grad(adapter_name, not inference_mode)

        def _check_new_adapter_config(self, config) -> None:
            if len(self.peft_config) > 1:
                raise ValueError("idcompress supports one adapter per model")

        # -- merging -----------------------------------------------------------------------------
        def _finish(self, merge: bool) -> nn.Module:
            im = self._layer.model
            self._refresh_hook.remove()
            model = im.merge_and_unload() if merge else im.unload()
            del self._modules[LAYER_ATTR]
            if hasattr(model, "peft_config"):
                del model.peft_config
            return model

        def merge_and_unload(self, progressbar: bool = False, safe_merge: bool = False, adapter_names=None):
            """The base model (its own class) with θ₀ + λ·Pθ_d written into its parameters."""
            if safe_merge:
                im = self._layer.model
                with torch.no_grad():
                    bad = [e.name for e, t in zip(im.layout.entries, im.compose()) if not torch.isfinite(t).all()]
                if bad:
                    raise ValueError(f"merging would write NaN/Inf into {bad[:5]}")
            return self._finish(merge=True)

        def unload(self):
            """The base model with θ₀ back in place."""
            return self._finish(merge=False)

        def merge_adapter(self, *args, **kwargs) -> None:
            raise NotImplementedError("an idcompress adapter cannot be merged reversibly; use merge_and_unload()")

        def unmerge_adapter(self, *args, **kwargs) -> None:
            raise NotImplementedError("an idcompress adapter cannot be merged reversibly; use merge_and_unload()")

        def delete_adapter(self, adapter_name: str) -> None:
            raise NotImplementedError("an idcompress adapter cannot be deleted in place; use unload()")

        # -- state dict <-> checkpoint keys ------------------------------------------------------
        @classmethod
        def _model_key(cls, model, adapter_name: str, name: str) -> str:
            return f"{_find_tuner(model, cls)[0]}{LAYER_ATTR}.{ADAPTERS_ATTR}.{adapter_name}.{name}"

        @classmethod
        def _get_adapter_state_dict(cls, model, config, adapter_name, state_dict, unwanted_adapter_names):
            if config.base_fingerprint is None:  # saved through PEFT: the config is written after this
                tuner = _find_tuner(model, cls)[1]
                config.base_fingerprint = fingerprint(getattr(tuner._layer, ADAPTERS_ATTR)[adapter_name])
            dtype = DTYPES[config.vector_dtype]
            out = {}
            for name in VECTOR_KEYS:
                key = cls._model_key(model, adapter_name, name)
                if key in state_dict:
                    out[key] = state_dict[key].detach().to(dtype)
            return out

        @classmethod
        def _remove_adapter_name_from_key(cls, key: str, adapter_name: str) -> str:
            for name in VECTOR_KEYS:
                if key.endswith(f"{LAYER_ATTR}.{ADAPTERS_ATTR}.{adapter_name}.{name}"):
                    return name
            return super()._remove_adapter_name_from_key(key, adapter_name)

        @classmethod
        def _remap_adapter_state_dict_for_load(cls, model, config, adapter_name, state_dict):
            cfg = config.to_intrinsic_config()
            source = f"{config._idc_source} (adapter_model.safetensors)"
            dtypes = {k: st_dtypes.get(v.dtype, str(v.dtype)) for k, v in state_dict.items()}
            theta, lam = _check_vectors(cfg, state_dict, dtypes, source)
            out = {cls._model_key(model, adapter_name, "theta_d"): theta}
            if lam is not None:
                out[cls._model_key(model, adapter_name, "said_lambda")] = lam
            return out

    def _check_fingerprint(im, cfg, model, peft_cfg) -> None:
        fp = fingerprint(im)
        if fp == cfg.base_fingerprint:
            return
        base_desc = getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
        msg = (
            f"base model {base_desc!r} has fingerprint {fp}, but checkpoint {peft_cfg._idc_source} was tuned on "
            f"a base with fingerprint {cfg.base_fingerprint}"
        )
        if not peft_cfg.allow_fingerprint_mismatch:
            im.unload()  # give the caller its base back unchanged
            raise ValueError(msg + "; pass allow_fingerprint_mismatch=True to load it anyway")
        warnings.warn("LOADING ONTO A DIFFERENT BASE: " + msg, stacklevel=4)

    for cls in (IntrinsicPeftConfig, IntrinsicLayer, IntrinsicTuner):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
    return IntrinsicPeftConfig, IntrinsicTuner


def _plain(data: dict) -> dict:
    """Enum members (PEFT's TaskType) → their string values, containers copied."""
    import copy

    out = {}
    for k, v in data.items():
        out[k] = getattr(v, "value", v) if isinstance(v, str) else copy.deepcopy(v)
    return out


def _find_tuner(model, tuner_cls) -> tuple[str, Any]:
    """The tuner inside ``model`` and its state-dict prefix (``"base_model."`` in a ``PeftModel``)."""
    if isinstance(model, tuner_cls):
        return "", model
    for name, module in model.named_modules():
        if isinstance(module, tuner_cls):
            return name + ".", module
    raise ValueError(f"{type(model).__name__} holds no idcompress adapter")


def _materialise(im) -> None:
    """Parameters created under ``low_cpu_mem_usage`` (meta device) get real storage."""
    import torch
    from torch import nn

    for name, fill in (("theta_d", 0.0), ("said_lambda", 1.0)):
        p = getattr(im, name)
        if p is not None and p.is_meta:
            setattr(im, name, nn.Parameter(torch.full(p.shape, fill, device=im.theta0.device)))


# --------------------------------------------------------------------------------------------
# registration
def register() -> str:
    """Register ``INTRINSIC`` with the imported peft; never raises. Returns the outcome:

    ``"registered"``, ``"stub"`` (this peft cannot load our checkpoints: loading raises a clear
    ``ImportError``), or ``"failed"`` (see ``registration_error()``).
    """
    if _state["status"] in ("registered", "stub"):
        return _state["status"]
    try:
        import peft
        from peft import mapping
        from peft.utils.peft_types import PeftType

        key = extend_peft_type(PeftType)
        problem = unsupported_peft_message(peft.__version__)
        if problem is None:
            try:
                _register_classes(key)
                _state["status"] = "registered"
                return "registered"
            except Exception as e:  # a newer peft whose internals moved
                problem = (
                    f"idcompress could not register its adapter with peft {peft.__version__} "
                    f"({type(e).__name__}: {e}); load with idcompress.IntrinsicModel.from_pretrained instead"
                )
                _state["error"] = problem
        _install_stub(mapping.PEFT_TYPE_TO_CONFIG_MAPPING, key, problem)
        _state["status"] = "stub"
    except Exception as e:  # peft missing or unusable: PEFT loading is simply unavailable
        _state["status"], _state["error"] = "failed", f"{type(e).__name__}: {e}"
    return _state["status"]


def _register_classes(key) -> None:
    from peft import mapping
    from peft.utils import peft_types

    existing = mapping.PEFT_TYPE_TO_CONFIG_MAPPING.get(key)
    if existing is not None and existing.__module__ == __name__:
        return
    config_cls, tuner_cls = _state["classes"] or _make_classes()
    _state["classes"] = (config_cls, tuner_cls)
    peft_types.register_peft_method(name=METHOD_NAME, config_cls=config_cls, model_cls=tuner_cls, prefix=PREFIX)


def registration_error() -> str | None:
    """Why PEFT loading is unavailable or stubbed, if it is."""
    return _state["error"]


def __getattr__(name: str):
    """``IntrinsicPeftConfig`` / ``IntrinsicTuner``, built on first use (imports peft)."""
    if name in ("IntrinsicPeftConfig", "IntrinsicTuner"):
        status = register()
        if status != "registered":
            raise ImportError(registration_error() or f"PEFT support unavailable ({status})")
        return dict(zip(("IntrinsicPeftConfig", "IntrinsicTuner"), _state["classes"]))[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------------
# registering when peft gets imported
class _PeftImportHook:
    """``sys.meta_path`` finder: lets ``peft`` import normally, then calls ``register``.

    ``find_spec`` also runs when a library only probes for peft (``importlib.util.find_spec``),
    so the hook stays until peft is really executed.
    """

    _busy = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "peft" or self._busy:
            return None
        self._busy = True
        try:
            spec = importlib.util.find_spec("peft")
        finally:
            self._busy = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module) -> None:
            exec_module(module)
            _remove_hook()
            register()

        spec.loader.exec_module = exec_then_register  # a fresh loader instance that only serves peft
        return spec


def _remove_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _PeftImportHook)]


def install() -> None:
    """Register now if peft is imported, else right after ``import peft`` (never imports peft)."""
    module = sys.modules.get("peft")
    spec = getattr(module, "__spec__", None)
    if module is not None and not getattr(spec, "_initializing", False):
        register()
    elif not any(isinstance(f, _PeftImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _PeftImportHook())


install()
