"""Prediction targets eps / x0 / v and exact conversions between them.

With x_t = a x0 + s eps (a^2 + s^2 = 1) and v = a eps - s x0 (Salimans & Ho 2022):
  x0 = (x_t - s eps) / a = a x_t - s v,      eps = (x_t - a x0) / s = s x_t + a v.
Errors map exactly to eps space (so losses are comparable across targets):
  ||eps_hat - eps||^2 = SNR ||x0_hat - x0||^2 = SNR / (1 + SNR) ||v_hat - v||^2.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor
TARGETS = ("eps", "x0", "v")


def _check(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"unknown prediction target {target!r}; allowed: {list(TARGETS)}")


def bcast(coef: Tensor, like: Tensor) -> Tensor:
    """Reshape per-sample coefficients (B,) to broadcast against (B, ...)."""
    return coef.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def make_target(x0: Tensor, eps: Tensor, a: Tensor, s: Tensor, target: str) -> Tensor:
    _check(target)
    if target == "eps":
        return eps
    if target == "x0":
        return x0
    return bcast(a, x0) * eps - bcast(s, x0) * x0


def to_x0(pred: Tensor, x_t: Tensor, a: Tensor, s: Tensor, target: str) -> Tensor:
    _check(target)
    if target == "x0":
        return pred
    if target == "eps":
        return (x_t - bcast(s, x_t) * pred) / bcast(a, x_t)
    return bcast(a, x_t) * x_t - bcast(s, x_t) * pred


def to_eps(pred: Tensor, x_t: Tensor, a: Tensor, s: Tensor, target: str) -> Tensor:
    _check(target)
    if target == "eps":
        return pred
    if target == "x0":
        return (x_t - bcast(a, x_t) * pred) / bcast(s, x_t)
    return bcast(s, x_t) * x_t + bcast(a, x_t) * pred


def to_v(pred: Tensor, x_t: Tensor, a: Tensor, s: Tensor, target: str) -> Tensor:
    _check(target)
    if target == "v":
        return pred
    x0 = to_x0(pred, x_t, a, s, target)
    eps = to_eps(pred, x_t, a, s, target)
    return bcast(a, x_t) * eps - bcast(s, x_t) * x0


def eps_space_factor(snr: Tensor, target: str) -> Tensor:
    """c with ||eps_hat - eps||^2 = c ||pred - target||^2: 1 (eps), SNR (x0), SNR / (1 + SNR) (v)."""
    _check(target)
    snr = torch.as_tensor(snr, dtype=torch.float64)
    if target == "eps":
        return torch.ones_like(snr)
    if target == "x0":
        return snr
    return snr / (1.0 + snr)
