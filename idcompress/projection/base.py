"""The projection interface shared by every kind: ``P : R^d → R^D``, linear, fixed, seeded.

A projection is a plain object (not an ``nn.Module``: ``Module.apply`` means something else) that
owns a few tensors and moves with ``.to(device)``. ``apply`` is differentiable: its backward is
``adjoint``, so nothing of size ``D × d`` is ever built for the gradient.
"""

from __future__ import annotations

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

    # -- per-range operations (TEMPORARY whole-D emulation; replaced by the kernels branch) -------
    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach().to(torch.float32)

    def prepare_adjoint(self, gu: torch.Tensor) -> torch.Tensor:
        return gu.to(torch.float32)

    def _shim_px(self, u):
        hit = getattr(self, "_shim_cache", None)
        key = (u.data_ptr(), u._version, u.shape)
        if hit is None or hit[0] != key:
            self._shim_cache = hit = (key, None, self._forward(u))
        return hit[2]

    def range_apply(self, u, start, stop, theta0=None, scale=1.0, out=None):
        with torch.no_grad():
            v = self._shim_px(u)[start:stop]
            res = v * scale if theta0 is None else theta0 + torch.tensor(scale, dtype=torch.float32) * v
            return res if out is None else out.copy_(res)

    def range_adjoint(self, g, start, stop, scale=1.0, u=None):
        with torch.no_grad():
            y = torch.zeros(self.D, dtype=torch.float32, device=g.device)
            y[start:stop] = g * scale
            gu = self._adjoint(y)
            dot = None if u is None else float((g.double() * self._shim_px(u)[start:stop].double()).sum())
            return gu, dot

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
        if t.dim() != 1 or t.shape[0] != n:
            raise ValueError(f"{self.kind} projection: {name} must have shape ({n},), got {tuple(t.shape)}")


class _ProjectFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, proj: Projection) -> torch.Tensor:
        ctx.proj = proj
        with torch.no_grad():
            return proj._forward(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return ctx.proj._adjoint(g.contiguous().to(torch.float32)), None
