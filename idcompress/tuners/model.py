"""``IntrinsicModel``: a model whose only trainable numbers are ``theta_d`` (and SAID's ``said_lambda``).

How it works: the tuned parameters are taken out of their modules and their values copied into
one flat buffer ``theta0`` (length ``D``). Each forward composes, per tensor ``t`` of the layout,
``θ_t = θ₀_t + λ_t · (P θ_d)_t`` (λ ≡ 1 for DID) in float32, casts it to the tensor's dtype, and
sets it as a plain attribute of the owning module(s); then the base model runs unchanged. The
gradient reaches ``theta_d`` as ``Pᵀ ∇θ`` through the projection's custom backward. Between
forwards the modules keep the last composed tensors (so gradient checkpointing recomputes with the
same weights); under ``torch.no_grad`` the composition is cached until ``theta_d`` changes.

The fused CPU path (numba Fastfood, float32) writes θ into one persistent buffer of D floats and
rewrites it only when the values of θ_d or λ changed (several forwards of one step, e.g. gradient
accumulation, compose once); the per-tensor gradients go to the adjoint kernel in place. A graph
that still holds an older θ (built before θ_d changed) raises at ``backward`` instead of using
the new values.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..projection import Projection, make_projection
from .config import IntrinsicConfig
from .init import init_new_params, init_std_for, resolve_new_params
from .layout import Layout, build_layout, flat_dtype


class _FusedCompose(torch.autograd.Function):
    """θ = θ₀ + λ_seg ⊙ Pθ_d through the projection's fused kernels, one output per tensor.

    Forward: ``apply_add`` (one sweep reads θ₀ and writes θ) into the persistent buffer ``out``
    when ``write`` (the model skips it when ``out`` already holds θ for these θ_d, λ); the
    outputs are views of ``out``. Backward: the per-tensor gradients go to ``adjoint_pieces``
    (DID) or ``adjoint_said`` (SAID, which also returns each tensor's ``Σ g·(Pθ_d)``, λ's
    gradient) as they are: no concatenated copy of size D.
    """

    @staticmethod
    def forward(ctx, theta_d, lam, projection, theta0, offsets, out, write, sizes, shapes):
        ctx.set_materialize_grads(False)
        if write:
            with torch.no_grad():
                if lam is None:
                    projection.apply_add(theta_d.detach(), theta0, out=out)
                else:
                    projection.apply_add(theta_d.detach(), theta0, offsets, lam.detach(), out=out)
            # a graph still holding the old θ (saved by an earlier forward) must fail at
            # backward rather than silently use the new values
            torch.autograd.graph.increment_version(out)
        ctx.save_for_backward(theta_d, lam)
        ctx.projection, ctx.offsets, ctx.sizes = projection, offsets, sizes
        return tuple(p.view(shape) for p, shape in zip(out.split(sizes), shapes))

    @staticmethod
    def backward(ctx, *grads):
        theta_d, lam = ctx.saved_tensors
        pieces = [n if g is None else g for g, n in zip(grads, ctx.sizes)]
        none = (None,) * 7  # projection, theta0, offsets, out, write, sizes, shapes
        if lam is None:
            return ctx.projection.adjoint_pieces(pieces).to(theta_d.device), None, *none
        gx, dots = ctx.projection.adjoint_said(pieces, theta_d.detach(), ctx.offsets, lam.detach())
        return gx.to(theta_d.device), dots.to(lam.device, lam.dtype), *none


class IntrinsicModel(nn.Module):
    """Wraps ``model`` (modified in place, like PEFT) so that θ = θ₀ + P·θ_d."""

    def __init__(self, model: nn.Module, config: IntrinsicConfig) -> None:
        super().__init__()
        if isinstance(model, IntrinsicModel):
            raise ValueError("model is already an IntrinsicModel")
        config = copy.deepcopy(config)
        config.validate()
        layout = build_layout(model, config.include, config.exclude)
        D, m = layout.D, layout.m
        if config.is_said and config.d <= m:
            raise ValueError(
                f"projection='said' learns one scale per tuned tensor, so it needs d > m = {m} "
                f"(the number of tuned tensors), got d={config.d}; raise d or use projection='fastfood'"
            )
        d_proj = config.d - m if config.is_said else config.d
        if d_proj > D:
            raise ValueError(f"d={config.d} is larger than D={D}, the number of tuned parameters")
        if config.D is not None and config.D != D:
            raise ValueError(f"config.D={config.D} but the model's layout has D={D}")
        # built before anything of size D is allocated, so a refused size costs nothing
        projection = make_projection(config.projection_kind, d_proj, D, config.seed)

        new_names = resolve_new_params(model, config.init_new)
        init_new_params(model, new_names, config.seed, init_std_for(model, config.init_std))
        config.init_new = new_names
        config.D, config.num_tensors, config.layout_digest = D, m, layout.digest()

        first = next(iter(layout.entries))
        device = first.owners[0][0]._parameters[first.owners[0][1]].device
        theta0 = torch.empty(D, dtype=flat_dtype(layout), device=device)
        self._requires_grad = {}
        with torch.no_grad():
            for e in layout.entries:
                mod, attr = e.owners[0]
                theta0[e.offset : e.offset + e.numel].copy_(mod._parameters[attr].reshape(-1))
        for e in layout.entries:
            mod, attr = e.owners[0]
            self._requires_grad[e.name] = mod._parameters[attr].requires_grad
            for mod, attr in e.owners:
                del mod._parameters[attr]
        for name, p in model.named_parameters():
            self._requires_grad[name] = p.requires_grad
            p.requires_grad_(False)

        self.base_model = model
        self.intrinsic_config = config
        self.layout: Layout = layout
        self.projection: Projection = projection.to(device)
        self.register_buffer("theta0", theta0, persistent=False)
        self.theta_d = nn.Parameter(torch.zeros(d_proj, device=device))
        if config.is_said:
            self.said_lambda = nn.Parameter(torch.ones(m, device=device))
        else:
            self.said_lambda = None
        self._cache_key = None
        self._buffer, self._buffer_key = None, None  # θ of the fused path (see _fused_compose)
        self._sizes = layout.sizes
        self._shapes = [e.shape for e in layout.entries]
        sizes = torch.tensor([0, *layout.sizes], dtype=torch.int64)
        self._seg_offsets = sizes.cumsum(0)
        self.use_fused = True  # the fused kernels where the projection has them (see _fused_ok)
        self._install(self._theta0_views())
        # DDP: never broadcast or all-reduce the frozen θ₀ or the frozen base tensors
        self._ddp_params_and_buffers_to_ignore = ["theta0"] + [
            f"base_model.{n}" for n, _ in model.named_parameters()
        ]

    # -- composition ------------------------------------------------------------------------------
    def _tensor_dtype(self, e) -> torch.dtype:
        return e.dtype if len({x.dtype for x in self.layout.entries}) > 1 else self.theta0.dtype

    def _theta0_views(self) -> list[torch.Tensor]:
        parts = self.theta0.split(self.layout.sizes)
        return [p.view(e.shape).to(self._tensor_dtype(e)) for p, e in zip(parts, self.layout.entries)]

    def _fused_ok(self) -> bool:
        uses = getattr(self.projection, "uses_numba", None)
        return (
            self.use_fused
            and uses is not None
            and uses()
            and self.theta0.dtype == torch.float32
            and self.theta0.device.type == "cpu"
            and len({e.dtype for e in self.layout.entries}) == 1
        )

    def compose(self) -> list[torch.Tensor]:
        """θ₀ + λ·Pθ_d for every tensor of the layout (differentiable in ``theta_d``/``said_lambda``)."""
        if self._fused_ok():
            return list(self._fused_compose())
        delta = self.projection.apply(self.theta_d)
        parts = delta.split(self.layout.sizes)
        base = self.theta0.split(self.layout.sizes)
        lam = self.said_lambda
        out = []
        for i, e in enumerate(self.layout.entries):
            b = base[i] if base[i].dtype == torch.float32 else base[i].float()
            t = b + parts[i] if lam is None else torch.addcmul(b, parts[i], lam[i].float())
            out.append(t.view(e.shape).to(self._tensor_dtype(e)))
        return out

    def _fused_compose(self) -> tuple[torch.Tensor, ...]:
        # θ lives in one persistent buffer (no 91 MB allocation and page faults per step on
        # MiniLM); it is rewritten only when θ_d or λ changed since the last write
        lam = self.said_lambda
        key = (self.theta_d.detach(), None if lam is None else lam.detach())
        last = self._buffer_key
        write = (
            self._buffer is None
            or last is None
            or not torch.equal(last[0], key[0])
            or (lam is not None and not torch.equal(last[1], key[1]))
        )
        if self._buffer is None:
            self._buffer = torch.empty_like(self.theta0)
        outs = _FusedCompose.apply(
            self.theta_d, lam, self.projection, self.theta0, self._seg_offsets, self._buffer,
            write, self._sizes, self._shapes,
        )
        if write:
            self._buffer_key = tuple(None if k is None else k.clone() for k in key)
        return outs

    def _install(self, tensors: list[torch.Tensor]) -> None:
        for e, t in zip(self.layout.entries, tensors):
            for mod, attr in e.owners:
                mod.__dict__[attr] = t

    def _refresh(self) -> None:
        lam = self.said_lambda
        key = (self.theta_d._version, None if lam is None else lam._version, self.theta_d.device)
        if not torch.is_grad_enabled():
            if self._cache_key == key:
                return
            self._install(self.compose())
            self._cache_key = key
        else:
            self._install(self.compose())
            self._cache_key = None

    def forward(self, *args, **kwargs):
        """Same arguments and outputs as the base model's forward."""
        self._refresh()
        return self.base_model(*args, **kwargs)

    # -- nn.Module plumbing -----------------------------------------------------------------------
    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if "projection" in self.__dict__:
            self.projection.to(self.theta0.device)
            self._cache_key = None
            self._buffer, self._buffer_key = None, None
            self._install(self._theta0_views())
        return self

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("base_model", "_modules", "_parameters", "_buffers"):
                raise
            return getattr(self._modules["base_model"], name)

    # -- PEFT-like API ----------------------------------------------------------------------------
    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable numbers, all numbers incl. θ₀ and the frozen rest of the base)."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in self.base_model.parameters())
        return trainable, trainable + frozen + self.layout.D

    def print_trainable_parameters(self) -> None:
        t, a = self.get_nb_trainable_parameters()
        print(
            f"trainable params: {t:,} || all params: {a:,} || trainable%: {100 * t / a:.4f} "
            f"|| D (tuned through P): {self.layout.D:,} in {self.layout.m} tensors"
        )

    def _restore_parameters(self, tensors: list[torch.Tensor]) -> nn.Module:
        for e, t in zip(self.layout.entries, tensors):
            p = nn.Parameter(t.detach().clone(), requires_grad=self._requires_grad.get(e.name, True))
            for mod, attr in e.owners:
                mod.__dict__.pop(attr, None)
                mod._parameters[attr] = p
        model = self.base_model
        for name, p in model.named_parameters():
            p.requires_grad_(self._requires_grad.get(name, True))
        return model

    @torch.no_grad()
    def merge_and_unload(self) -> nn.Module:
        """The base model (its own class) with θ₀ + λ·Pθ_d written into its parameters.

        The wrapper must not be used afterwards.
        """
        model = self._restore_parameters(self.compose())
        self._unloaded()
        return model

    @torch.no_grad()
    def unload(self) -> nn.Module:
        """The base model with θ₀ back in place (the tuning discarded)."""
        model = self._restore_parameters(self._theta0_views())
        self._unloaded()
        return model

    def _unloaded(self) -> None:
        del self._modules["base_model"]
        self._cache_key = None

    # -- checkpoints ------------------------------------------------------------------------------
    def save_pretrained(self, save_directory, single_file: bool = False, overwrite: bool = False, **_):
        """Write the tiny checkpoint (a PEFT-layout directory, or one ``*.idc.safetensors``)."""
        from ..checkpoint.format import save_intrinsic_model

        return save_intrinsic_model(self, save_directory, single_file=single_file, overwrite=overwrite)

    @classmethod
    def from_pretrained(
        cls,
        path_or_id,
        base_model: nn.Module | None = None,
        revision: str | None = None,
        allow_fingerprint_mismatch: bool = False,
        device=None,
        cache_dir=None,
        **model_kwargs,
    ) -> IntrinsicModel:
        """Rebuild a tuned model from a checkpoint directory, ``*.idc.safetensors`` or hub repo id.

        Without ``base_model`` the base is resolved from the checkpoint (packaged short name,
        local folder or hub id + ``revision``); P and new heads are regenerated from the seed;
        a base with another fingerprint is refused unless ``allow_fingerprint_mismatch``.
        """
        from ..checkpoint.format import load_intrinsic_model
        from ..checkpoint.hub import checkpoint_in_folder, resolve_checkpoint

        path = resolve_checkpoint(path_or_id, revision=revision, cache_dir=cache_dir)
        if path.is_dir():
            path = checkpoint_in_folder(path)
        return load_intrinsic_model(
            path, base_model=base_model, allow_fingerprint_mismatch=allow_fingerprint_mismatch,
            device=device, **model_kwargs,
        )

    def push_to_hub(self, repo_id: str, **kwargs) -> str:
        """Upload the checkpoint to the Hugging Face Hub (see ``checkpoint.hub.push_to_hub``)."""
        from ..checkpoint.hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)

    def extra_repr(self) -> str:
        c = self.intrinsic_config
        return f"projection={c.projection}, d={c.d}, D={self.layout.D}, m={self.layout.m}, seed={c.seed}"


def get_intrinsic_model(model: nn.Module, config: IntrinsicConfig) -> IntrinsicModel:
    """Wrap ``model`` so that its only trainable numbers are a ``config.d``-dimensional vector."""
    return IntrinsicModel(model, config)
