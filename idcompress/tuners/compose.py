"""Composition on use: each tuned tensor's value θ₀_t + λ_t·(P θ_d)_t is built when its module runs.

The base model keeps its parameters (θ₀, frozen). :class:`Composer` puts a forward pre-hook and a
forward hook on every module that owns a tuned parameter: the pre-hook composes that module's
tensors and shadows the parameters with them in the module's ``__dict__`` (attribute lookup finds
``__dict__`` before ``nn.Module.__getattr__`` reaches ``_parameters``), the hook removes them
again. So ``parameters()``, ``state_dict()``, ``.device``, DDP and tied weights see the ordinary
model, while the module's forward computes with the tuned weights. A tensor shared by several
modules (GPT-2's ``wte``/``lm_head``) is one layout entry: each use composes the same value, and
each use's gradient reaches θ_d.

Autograd: ``x = theta_d`` → ``u = prepare(x)`` (:class:`_Prepare`, computed once per step and
shared) → per tensor ``θ_t = θ₀_t + λ_t · range_apply(u, start, stop)`` (:class:`_ComposeRange`).
The backward of ``_ComposeRange`` runs as soon as autograd has the tensor's weight gradient and
reduces it at once (``range_adjoint``: only the Fastfood blocks covering the tensor), so no
gradient of size D is ever held; ``_Prepare``'s backward finishes the transform once.

Memory (``recompute=True``): autograd would keep every composed θ_t alive until backward (a
matmul saves its weight for the input gradient). With ``recompute`` the module's forward runs
under ``saved_tensors_hooks`` that store a recipe (which tensor, which view) instead of any saved
tensor living in a composed weight's storage, and recompose it when backward asks for it. Cost:
one more composition per step. Large ``nn.Linear`` / ``nn.Embedding`` weights are streamed
instead (``_StreamedWeight``: row-chunked composition and per-chunk adjoint, only the used rows of
an embedding), so neither the whole composed weight nor its gradient is ever held. Under ``torch.no_grad`` in eval mode the composed tensors are
cached until θ_d or λ change (``inference_cache``), so generation does not recompose per token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..projection import Projection
from .layout import Layout


class _Prepare(torch.autograd.Function):
    """``u = prepare(x)`` (Fastfood: ``H B x_pad``); backward ``prepare_adjoint``."""

    @staticmethod
    def forward(ctx, x, projection):
        ctx.projection = projection
        return projection.prepare(x.detach())

    @staticmethod
    def backward(ctx, gu):
        return ctx.projection.prepare_adjoint(gu.contiguous()).to(gu.device), None


class _ComposeRange(torch.autograd.Function):
    """``θ₀ + λ · (P x)[start:stop]`` for one tensor, from ``u``; backward reduces the tensor's
    gradient into ``u``'s (and λ's) at once."""

    @staticmethod
    def forward(ctx, u, lam, theta0, projection, start, stop):
        scale = 1.0 if lam is None else float(lam)
        flat = theta0.detach().reshape(-1)
        if flat.dtype != torch.float32:
            flat = flat.float()
        out = projection.range_apply(u.detach(), start, stop, flat.contiguous(), scale)
        ctx.save_for_backward(u, lam)
        ctx.projection, ctx.start, ctx.stop, ctx.scale = projection, start, stop, scale
        return out.view(theta0.shape).to(theta0.dtype)

    @staticmethod
    def backward(ctx, g):
        u, lam = ctx.saved_tensors
        g = g.detach().reshape(-1).to(torch.float32).contiguous()
        gu, dot = ctx.projection.range_adjoint(g, ctx.start, ctx.stop, ctx.scale, u if lam is not None else None)
        glam = None if lam is None else torch.as_tensor(dot, dtype=lam.dtype, device=lam.device).reshape(lam.shape)
        return gu.to(u.device), glam, None, None, None, None


def _same(snapshot: torch.Tensor | None, t: torch.Tensor | None) -> bool:
    if snapshot is None or t is None:
        return snapshot is None and t is None
    return snapshot.device == t.device and snapshot.shape == t.shape and torch.equal(snapshot, t.detach())


class _Recipe:
    """What a saved tensor in a composed weight's storage is, to rebuild it in backward: the
    layout index, the view, and the ``u`` and λ_t the forward composed it from (so backward
    rebuilds exactly the forward's weight even if θ_d changed since)."""

    __slots__ = ("index", "size", "stride", "offset", "source")

    def __init__(self, index, t, source=None):
        self.index, self.size, self.stride, self.offset = index, t.size(), t.stride(), t.storage_offset()
        self.source = source


class _Outer:
    """A saved tensor packed by the hooks that were active before the recipe hooks."""

    __slots__ = ("packed",)

    def __init__(self, packed):
        self.packed = packed


class Composer:
    """Composes the layout's tensors into their modules while those modules run (see module doc).

    ``theta_d`` / ``said_lambda`` are read from ``owner`` (the PEFT layer that holds them), so it
    stays their only home.
    """

    def __init__(self, layout: Layout, projection: Projection, owner: nn.Module) -> None:
        self.layout = layout
        self.projection = projection
        self.owner = owner
        self.active = True
        self.recompute = False
        self.inference_cache = True
        self.stream_min_numel = STREAM_MIN_NUMEL  # recompute mode: stream Linear/Embedding weights this large
        self._u: dict[bool, tuple] = {}  # grad? -> (key, u)
        self._cache: dict[int, torch.Tensor] = {}
        self._cache_key = None
        self._depth: dict[int, int] = {}
        self._saved_hooks: dict[int, list] = {}
        self._by_module: dict[int, tuple[nn.Module, list[tuple[str, int]]]] = {}
        for i, e in enumerate(layout.entries):
            for module, attr in e.owners:
                self._by_module.setdefault(id(module), (module, []))[1].append((attr, i))
        self._handles = []
        for module, _ in self._by_module.values():
            self._handles.append(module.register_forward_pre_hook(self._pre_hook))
            self._handles.append(module.register_forward_hook(self._post_hook, always_call=True))

    def vectors(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.owner.theta_d, self.owner.said_lambda

    def __getstate__(self) -> dict:
        # caches hold graph nodes (not copyable) and transient hook state: a copy starts clean
        state = dict(self.__dict__)
        state.update(_u={}, _cache={}, _cache_key=None, _depth={}, _saved_hooks={}, _last_source=None)
        return state

    # -- values -----------------------------------------------------------------------------------
    def parameter(self, index: int) -> nn.Parameter:
        module, attr = self.layout.entries[index].owners[0]
        return module._parameters[attr]

    def _prepared(self, x: torch.Tensor) -> torch.Tensor:
        # keyed by value: fused optimizers (AdamW(fused=True), Trainer's default) update θ_d in
        # place without bumping its version counter, so a version key would go stale
        grad = torch.is_grad_enabled() and x.requires_grad
        hit = self._u.get(grad)
        if hit is not None and _same(hit[0], x) and hit[1] == torch.is_inference_mode_enabled():
            return hit[2]
        if self.projection.device != x.device:
            self.projection.to(x.device)
        u = _Prepare.apply(x, self.projection) if grad else self.projection.prepare(x.detach())
        self._u[grad] = (x.detach().clone(), torch.is_inference_mode_enabled(), u)
        return u

    def compose(self, index: int) -> torch.Tensor:
        """θ₀_t + λ_t·(P θ_d)_t for layout entry ``index``, shaped and typed like its parameter."""
        x, lam = self.vectors()
        e = self.layout.entries[index]
        theta0 = self.parameter(index)
        u = self._prepared(x)
        if u.device != theta0.device:
            u = u.to(theta0.device)
        s = None if lam is None else lam[index]
        self._last_source = (u, None if s is None else float(s))
        return _ComposeRange.apply(u, s, theta0, self.projection, e.offset, e.offset + e.numel)

    def recompose(self, index: int, u: torch.Tensor, scale: float | None) -> torch.Tensor:
        """Entry ``index`` from a given ``u`` and λ_t (no autograd): what backward unpacks."""
        e = self.layout.entries[index]
        theta0 = self.parameter(index)
        flat = theta0.detach().reshape(-1)
        flat = flat if flat.dtype == torch.float32 else flat.float()
        with torch.no_grad():
            out = self.projection.range_apply(u.detach(), e.offset, e.offset + e.numel, flat.contiguous(),
                                              1.0 if scale is None else scale)
        return out.view(theta0.shape).to(theta0.dtype)

    def compose_all(self) -> list[torch.Tensor]:
        """Every tensor of the layout (for merging; differentiable when grad is enabled)."""
        return [self.compose(i) for i in range(self.layout.m)]

    def _cached(self, index: int) -> torch.Tensor:
        x, lam = self.vectors()
        key = self._cache_key
        if key is None or not _same(key[0], x) or not _same(key[1], lam):
            self._cache = {}
            self._cache_key = (x.detach().clone(), None if lam is None else lam.detach().clone())
        t = self._cache.get(index)
        if t is None:
            t = self._cache[index] = self.compose(index)
        return t

    def clear_cache(self) -> None:
        self._cache, self._cache_key = {}, None
        self._u = {}

    # -- hooks ------------------------------------------------------------------------------------
    def _pre_hook(self, module, args):
        mid = id(module)
        depth = self._depth.get(mid, 0)
        self._depth[mid] = depth + 1
        if depth or not self.active:
            return
        grad = torch.is_grad_enabled()
        use_cache = self.inference_cache and not grad and not module.training
        if grad and self._cache:
            self._cache, self._cache_key = {}, None
        composed = []
        stream = self.recompute and grad and type(module) in (nn.Linear, nn.Embedding)
        for attr, i in self._by_module[mid][1]:
            if stream and attr == "weight" and self.layout.entries[i].numel >= self.stream_min_numel:
                module.__dict__[attr] = _StreamedWeight.make(self.parameter(i), self, i)
                continue
            t = self._cached(i) if use_cache else self.compose(i)
            module.__dict__[attr] = t
            composed.append((i, t, getattr(self, "_last_source", None)))
        if self.recompute and grad:
            hooks = torch.autograd.graph.saved_tensors_hooks(*self._recipe_hooks(composed))
            hooks.__enter__()
            self._saved_hooks.setdefault(mid, []).append(hooks)

    def _post_hook(self, module, args, output):
        mid = id(module)
        depth = self._depth.get(mid, 1) - 1
        self._depth[mid] = depth
        if depth:
            return None
        stack = self._saved_hooks.get(mid)
        if stack:
            stack.pop().__exit__(None, None, None)
        for attr, _ in self._by_module[mid][1]:
            module.__dict__.pop(attr, None)
        return None

    def _recipe_hooks(self, composed):
        storages = {t.untyped_storage().data_ptr(): (i, src) for i, t, src in composed if t.numel()}
        # hooks already active (non-reentrant gradient checkpointing's): every tensor that is not a
        # recipe goes through them, or checkpointing would keep what it means to drop
        outer = torch._C._autograd._top_saved_tensors_default_hooks(False)

        def pack(t):
            if t.numel() and t.device.type != "meta":
                hit = storages.get(t.untyped_storage().data_ptr())
                if hit is not None:
                    return _Recipe(hit[0], t, hit[1])
            return t if outer is None else _Outer(outer[0](t))

        def unpack(obj):
            if isinstance(obj, _Outer):
                return outer[1](obj.packed)
            if not isinstance(obj, _Recipe):
                return obj
            u, scale = obj.source
            full = self.recompose(obj.index, u, scale)
            return full.as_strided(obj.size, obj.stride, obj.offset)

        return pack, unpack

    def remove(self) -> None:
        """Take the hooks off (the modules compute with their parameters again)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        for module, attrs in self._by_module.values():
            for attr, _ in attrs:
                module.__dict__.pop(attr, None)
        self.clear_cache()


# -- streamed Linear / Embedding (recompute mode, large weights) --------------------------------
STREAM_MIN_NUMEL = 2**20  # weights at least this large are streamed (recompute mode, grad enabled)
_CHUNK_NUMEL = 2**20  # elements of one composed chunk (4 MiB in float32)


def _f32(t: torch.Tensor) -> torch.Tensor:
    return (t if t.dtype == torch.float32 else t.float()).contiguous()


def _chunk_rows(rows: int, cols: int) -> int:
    return max(1, min(rows, _CHUNK_NUMEL // max(cols, 1)))


def _compose_rows(projection, u, theta0, start, r0, r1, scale):
    """Rows ``r0:r1`` of the composed (row-major, 2-D) weight, in θ₀'s dtype."""
    cols = theta0.shape[1]
    flat = _f32(theta0.detach()[r0:r1].reshape(-1))
    w = projection.range_apply(u.detach(), start + r0 * cols, start + r1 * cols, flat, scale)
    return w.view(r1 - r0, cols).to(theta0.dtype)


class _StreamedLinear(torch.autograd.Function):
    """``x @ θᵀ`` with ``θ = θ₀ + λ·(P x_d)[start:…]`` composed and reduced in row chunks: neither
    the whole composed weight nor its gradient is ever held. Saves ``x`` only."""

    @staticmethod
    def forward(ctx, x, u, lam, theta0, projection, start):
        scale = 1.0 if lam is None else float(lam)
        rows, cols = theta0.shape
        step = _chunk_rows(rows, cols)
        x2 = x.detach().reshape(-1, cols)
        out = x2.new_empty(x2.shape[0], rows)
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            out[:, r0:r1] = x2 @ _compose_rows(projection, u, theta0, start, r0, r1, scale).t()
        ctx.save_for_backward(x, u, lam)
        ctx.theta0, ctx.projection, ctx.start, ctx.scale = theta0, projection, start, scale
        return out.view(*x.shape[:-1], rows)

    @staticmethod
    def backward(ctx, g):
        x, u, lam = ctx.saved_tensors
        theta0, projection, start, scale = ctx.theta0, ctx.projection, ctx.start, ctx.scale
        rows, cols = theta0.shape
        step = _chunk_rows(rows, cols)
        need_x, need_u, need_lam = ctx.needs_input_grad[:3]
        g2 = g.reshape(-1, rows)
        x2 = x.detach().reshape(-1, cols)
        gx = torch.zeros_like(x2) if need_x else None
        gu = None
        dot = 0.0
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            gc = g2[:, r0:r1]
            if need_x:
                gx += gc @ _compose_rows(projection, u, theta0, start, r0, r1, scale)
            if need_u or need_lam:
                gw = _f32(gc.t() @ x2).reshape(-1)
                gu_c, d = projection.range_adjoint(gw, start + r0 * cols, start + r1 * cols, scale,
                                                   u if lam is not None else None)
                del gw
                gu = gu_c if gu is None else gu.add_(gu_c)
                dot += 0.0 if d is None else d
        glam = None
        if lam is not None and need_lam:
            glam = torch.as_tensor(dot, dtype=lam.dtype, device=lam.device).reshape(lam.shape)
        return (None if gx is None else gx.view(x.shape), None if gu is None else gu.to(u.device),
                glam, None, None, None)


def _runs(ids: list[int]) -> list[tuple[int, int, int]]:
    """``(first position, first id, length)`` of each run of consecutive ids in sorted ``ids``."""
    out, i = [], 0
    while i < len(ids):
        j = i + 1
        while j < len(ids) and ids[j] == ids[j - 1] + 1:
            j += 1
        out.append((i, ids[i], j - i))
        i = j
    return out


class _StreamedEmbedding(torch.autograd.Function):
    """``θ[ids]`` composing only the rows the batch uses; backward reduces each used row's
    gradient (no dense vocabulary × hidden gradient). ``padding_idx``'s row gets no gradient."""

    @staticmethod
    def forward(ctx, ids, u, lam, theta0, projection, start, padding_idx):
        scale = 1.0 if lam is None else float(lam)
        cols = theta0.shape[1]
        uniq, inv = torch.unique(ids.reshape(-1), sorted=True, return_inverse=True)
        if uniq.numel() and (int(uniq[0]) < 0 or int(uniq[-1]) >= theta0.shape[0]):
            raise IndexError("index out of range in self")
        runs = _runs(uniq.tolist())
        rows = theta0.new_empty(uniq.numel(), cols)
        for pos, r0, n in runs:
            rows[pos:pos + n] = _compose_rows(projection, u, theta0, start, r0, r0 + n, scale)
        ctx.save_for_backward(u, lam, inv)
        ctx.runs, ctx.n_uniq, ctx.cols, ctx.dtype = runs, uniq.numel(), cols, theta0.dtype
        ctx.projection, ctx.start, ctx.scale, ctx.padding_idx = projection, start, scale, padding_idx
        return rows[inv].view(*ids.shape, cols)

    @staticmethod
    def backward(ctx, g):
        u, lam, inv = ctx.saved_tensors
        cols, projection, start, scale = ctx.cols, ctx.projection, ctx.start, ctx.scale
        grows = torch.zeros(ctx.n_uniq, cols, dtype=torch.float32, device=g.device)
        grows.index_add_(0, inv, g.reshape(-1, cols).to(torch.float32))
        gu, dot = None, 0.0
        for pos, r0, n in ctx.runs:
            gr = grows[pos:pos + n]
            if ctx.padding_idx is not None and r0 <= ctx.padding_idx < r0 + n:
                gr[ctx.padding_idx - r0].zero_()
            gu_c, d = projection.range_adjoint(gr.reshape(-1), start + r0 * cols, start + (r0 + n) * cols,
                                               scale, u if lam is not None else None)
            gu = gu_c if gu is None else gu.add_(gu_c)
            dot += 0.0 if d is None else d
        glam = None
        if lam is not None and ctx.needs_input_grad[2]:
            glam = torch.as_tensor(dot, dtype=lam.dtype, device=lam.device).reshape(lam.shape)
        return None, None if gu is None else gu.to(u.device), glam, None, None, None, None


class _StreamedWeight(torch.Tensor):
    """Stands in for a large composed weight in its module's ``__dict__`` (recompute mode): a view
    of θ₀ (no copy) whose ``F.linear`` / ``F.embedding`` run streamed; any other use composes the
    whole tensor (correct, just not streamed)."""

    @staticmethod
    def make(theta0: torch.Tensor, composer: Composer, index: int) -> _StreamedWeight:
        t = torch.Tensor._make_subclass(_StreamedWeight, theta0.detach(), False)
        t._composer, t._index = composer, index
        return t

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        with torch._C.DisableTorchFunctionSubclass():
            if func is F.linear:
                return _stream_linear(*args, **kwargs)
            if func is F.embedding:
                return _stream_embedding(*args, **kwargs)
            if getattr(func, "__name__", "") == "__get__":  # .shape, .dtype, .device, …: θ₀'s
                return func(*[a._theta0() if isinstance(a, _StreamedWeight) else a for a in args], **kwargs)
            return func(*_materialise(args), **_materialise(kwargs))

    def _theta0(self) -> torch.Tensor:
        return self._composer.parameter(self._index)

    def _parts(self):
        c, i = self._composer, self._index
        x, lam = c.vectors()
        theta0 = c.parameter(i)
        u = c._prepared(x)
        if u.device != theta0.device:
            u = u.to(theta0.device)
        return u, None if lam is None else lam[i], theta0, c.projection, c.layout.entries[i].offset


def _materialise(obj):
    if isinstance(obj, _StreamedWeight):
        return obj._composer.compose(obj._index)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _materialise(v) for k, v in obj.items()}
    return obj


def _stream_linear(input, weight, bias=None):
    if not isinstance(weight, _StreamedWeight) or isinstance(input, _StreamedWeight):
        return F.linear(*_materialise((input, weight, bias)))
    u, lam, theta0, projection, start = weight._parts()
    out = _StreamedLinear.apply(input, u, lam, theta0, projection, start)
    return out if bias is None else out + _materialise(bias)


def _stream_embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0,
                      scale_grad_by_freq=False, sparse=False):
    if (not isinstance(weight, _StreamedWeight) or max_norm is not None or scale_grad_by_freq or sparse
            or isinstance(input, _StreamedWeight)):
        return F.embedding(input, _materialise(weight), padding_idx, max_norm, norm_type, scale_grad_by_freq,
                           sparse)
    u, lam, theta0, projection, start = weight._parts()
    if padding_idx is not None and padding_idx < 0:
        padding_idx += theta0.shape[0]
    return _StreamedEmbedding.apply(input, u, lam, theta0, projection, start, padding_idx)
