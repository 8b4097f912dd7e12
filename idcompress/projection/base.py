"""The projection interface shared by every kind: ``P : R^d → R^D``, linear, fixed, seeded.

A projection is a plain object (not an ``nn.Module``: ``Module.apply`` means something else) that
owns a few tensors and moves with ``.to(device)``. ``apply`` is differentiable: its backward is
``adjoint``, so nothing of size ``D × d`` is ever built for the gradient.

Range operations (core v2, no autograd; the adapter wraps them). A tuned tensor is a contiguous
range ``[start, stop)`` of the flat layout, composed when its module runs:

* ``u = prepare(x)``: what the range operations read, float32, once per step (Fastfood:
  ``H B x_pad``, ``(n,)``; dense and sparse: ``x``, ``(d,)``).
* ``range_apply(u, start, stop, theta0, scale, out)``: ``θ₀ + scale·(P x)[start:stop]``.
* ``range_adjoint(g, start, stop, scale, u)``: the gradient w.r.t. ``u`` of
  ``⟨g, scale·(P x)[start:stop]⟩`` and, given ``u``, ``Σ g_i (P x)[start+i]`` (SAID's λ gradient).
* ``prepare_adjoint(Σ gu)``: the gradient w.r.t. ``x``, once per step.

Each range operation touches only the part of ``P`` that covers the range (Fastfood: the blocks
``start//n … (stop−1)//n``; dense: the rows; sparse: the non-zeros of those rows).
"""

from __future__ import annotations

import numbers
import operator

import torch


class Projection:
    """Base class. Subclasses implement ``_forward`` (d → D) and ``_adjoint`` (D → d) in float32."""

    kind: str = "base"

    def __init__(self, d: int, D: int, seed: int) -> None:
        for field, value in (("d", d), ("D", D), ("seed", seed)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{field} must be an int, got {field}={value!r}")
        if d <= 0:
            raise ValueError(f"d must be a positive integer, got d={d}")
        if D <= 0:
            raise ValueError(f"D must be a positive integer, got D={D}")
        if d > D:
            raise ValueError(
                f"d={d} is larger than D={D} (the number of tuned parameters): "
                "a subspace cannot have more dimensions than the space"
            )
        if seed < 0:
            raise ValueError(f"seed must be a non-negative int, got seed={seed}")
        self.d, self.D, self.seed = d, D, seed
        self.device = torch.device("cpu")

    # -- public API ---------------------------------------------------------------------------
    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``P x``: ``x`` of shape ``(d,)`` → float32 ``(D,)``; differentiable in ``x``."""
        self._check(x, self.d, "x")
        return _ProjectFn.apply(x.to(torch.float32), self)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``Pᵀ y``: ``y`` of shape ``(D,)`` → float32 ``(d,)`` (no autograd)."""
        self._check(y, self.D, "y")
        with torch.no_grad():
            return self._adjoint(y.detach().to(torch.float32))

    # -- range operations (core v2) ------------------------------------------------------------
    @property
    def u_size(self) -> int:
        """Length of the prepared vector ``u`` (Fastfood: ``n``; dense and sparse: ``d``)."""
        return self.d

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """``u``, what the range operations read: float32, shape ``(u_size,)``, on this device.

        Fastfood: ``u = H B x_pad`` (``(n,)``); dense and sparse: a float32 copy of ``x``. ``x``:
        shape ``(d,)``, any floating dtype. No autograd here (the adapter wraps it).
        """
        self._check(x, self.d, "x")
        _check_float(x, "x")
        with torch.no_grad():
            return self._prepare(x.detach())

    def prepare_adjoint(self, gu: torch.Tensor) -> torch.Tensor:
        """The gradient w.r.t. ``x`` (float32 ``(d,)``) given the gradient ``gu`` w.r.t. ``u``.

        ``gu``: shape ``(u_size,)``, float32 or float64 (e.g. the sum of ``range_adjoint``
        results). Fastfood: ``(B ⊙ H gu)[:d]``, transformed in float64; dense and sparse: ``gu``.
        """
        self._check(gu, self.u_size, "gu")
        _check_float(gu, "gu")
        self._check_device(gu, "gu")
        with torch.no_grad():
            return self._prepare_adjoint(gu.detach())

    def range_apply(
        self,
        u: torch.Tensor,
        start: int,
        stop: int,
        theta0: torch.Tensor | None = None,
        scale: float = 1.0,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``theta0 + scale·(P x)[start:stop]``, float32 ``(stop−start,)``, no autograd.

        ``u``: from :meth:`prepare`. ``theta0``: float32 contiguous ``(stop−start,)`` or None
        (then ``scale·(P x)[start:stop]``). ``out``: optional float32 contiguous
        ``(stop−start,)`` to write into; it may be ``theta0`` itself. Returns ``out`` if given.
        """
        start, stop = self._check_range(start, stop)
        n = stop - start
        self._check_u(u)
        if theta0 is not None:
            self._check_f32(theta0, n, "theta0")
        if out is not None:
            self._check_f32(out, n, "out")
        scale = _check_scale(scale)
        # every input is detached, so nothing records a graph (no no_grad() needed: µs count here)
        res = self._range_apply(_detached(u), start, stop,
                                None if theta0 is None else _detached(theta0), scale,
                                None if out is None else _detached(out))
        return res if out is None else out

    def range_adjoint(
        self,
        g: torch.Tensor,
        start: int,
        stop: int,
        scale: float = 1.0,
        u: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, float | None]:
        """Backward of ``u ↦ scale·(P x)[start:stop]``: ``(gu, dot)``, no autograd.

        ``g``: float32 contiguous ``(stop−start,)``, the gradient w.r.t. the range. ``gu``:
        float32 ``(u_size,)``, ``∂⟨g, scale·(P x)[start:stop]⟩/∂u``; sum it over the ranges and
        pass it to :meth:`prepare_adjoint`. ``dot``: ``Σ_i g_i (P x)[start+i]`` as a float (SAID's
        λ gradient) when ``u`` (from :meth:`prepare`) is given, else None.
        """
        start, stop = self._check_range(start, stop)
        self._check_f32(g, stop - start, "g")
        if u is not None:
            self._check_u(u)
        scale = _check_scale(scale)
        return self._range_adjoint(_detached(g), start, stop, scale,
                                   None if u is None else _detached(u))

    def state_bytes(self) -> int:
        """Bytes of tensors this projection keeps between applies."""
        return sum(t.numel() * t.element_size() for t in self._state_tensors())

    def to(self, device) -> Projection:
        """Move the state to ``device`` in place; returns ``self``."""
        device = torch.device(device)
        for name, t in self._named_state():
            setattr(self, name, t.to(device))
        self.device = device
        return self

    def materialize(self) -> torch.Tensor:
        """The ``(D, d)`` matrix, column by column. For tests on small problems only."""
        eye = torch.eye(self.d, dtype=torch.float32, device=self.device)
        with torch.no_grad():
            return torch.stack([self._forward(eye[j]) for j in range(self.d)], dim=1)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, d={self.d}, D={self.D}, seed={self.seed}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    # -- for subclasses -------------------------------------------------------------------------
    _state_names: tuple[str, ...] = ()

    def _named_state(self):
        for name in self._state_names:
            t = getattr(self, name, None)
            if t is not None:
                yield name, t

    def _state_tensors(self):
        return [t for _, t in self._named_state()]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check(self, t: torch.Tensor, n: int, name: str) -> None:
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{self.kind} projection: {name} must be a tensor, got {type(t).__name__}")
        if t.dim() != 1 or t.shape[0] != n:
            raise ValueError(f"{self.kind} projection: {name} must have shape ({n},), got {tuple(t.shape)}")

    # range operations: subclasses implement these on validated, detached arguments
    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, torch.float32, copy=True)

    def _prepare_adjoint(self, gu: torch.Tensor) -> torch.Tensor:
        return gu.to(self.device, torch.float32, copy=True)

    def _range_apply(self, u, start, stop, theta0, scale, out):  # pragma: no cover - abstract
        raise NotImplementedError

    def _range_adjoint(self, g, start, stop, scale, u):  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_range(self, start, stop) -> tuple[int, int]:
        if type(start) is int and type(stop) is int and 0 <= start < stop <= self.D:
            return start, stop  # the common case, fast
        vals = []
        for name, v in (("start", start), ("stop", stop)):
            if isinstance(v, bool):
                raise ValueError(f"{name} must be an int, got {name}={v!r}")
            try:
                vals.append(operator.index(v))
            except TypeError:
                raise ValueError(f"{name} must be an int, got {name}={v!r}") from None
        start, stop = vals
        if start < 0 or start >= self.D:
            raise ValueError(f"start must satisfy 0 <= start < D={self.D}, got start={start}")
        if stop <= start or stop > self.D:
            raise ValueError(
                f"stop must satisfy start < stop <= D={self.D}, got start={start}, stop={stop}"
            )
        return start, stop

    def _check_device(self, t: torch.Tensor, name: str) -> None:
        dev = t.device
        if dev == self.device:
            return
        if dev.type != self.device.type or (
            dev.index is not None and self.device.index is not None and dev.index != self.device.index
        ):
            raise ValueError(
                f"{self.kind} projection: {name} must be on the projection's device "
                f"{self.device}, got {name} on {dev}"
            )

    def _check_f32(self, t: torch.Tensor, n: int, name: str) -> None:
        """A float32 contiguous ``(n,)`` tensor on this projection's device."""
        if (
            type(t) is torch.Tensor and t.dtype is torch.float32 and t.dim() == 1
            and t.shape[0] == n and t.is_contiguous() and t.device == self.device
        ):
            return  # the common case, fast
        self._check(t, n, name)
        if t.dtype != torch.float32:
            raise ValueError(f"{self.kind} projection: {name} must be float32, got {name}.dtype={t.dtype}")
        if not t.is_contiguous():
            raise ValueError(f"{self.kind} projection: {name} must be contiguous")
        self._check_device(t, name)

    def _check_u(self, u: torch.Tensor) -> None:
        self._check_f32(u, self.u_size, "u")


class _ProjectFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, proj: Projection) -> torch.Tensor:
        ctx.proj = proj
        with torch.no_grad():
            return proj._forward(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return ctx.proj._adjoint(g.contiguous().to(torch.float32)), None


def _detached(t: torch.Tensor) -> torch.Tensor:
    return t.detach() if t.requires_grad else t


def _check_float(t: torch.Tensor, name: str) -> None:
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {name}.dtype={t.dtype}")


def _check_scale(scale) -> float:
    """``scale`` as a Python float (a real number or a one-element tensor)."""
    if type(scale) is float:
        return scale
    if isinstance(scale, torch.Tensor) and scale.numel() == 1 and scale.is_floating_point():
        return float(scale)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise ValueError(f"scale must be a real number, got scale={scale!r}")
    return float(scale)
