"""Outer optimisers: how a coordinator applies a round's aggregated change Δ to the shared basin.

As in DiLoCo (Douillard et al. 2023), the round's aggregated change of z is treated as a
pseudo-gradient: the outer gradient is g = −Δ, and an optimiser on the coordinator steps z with it.
One interface, a registry (as basinvcs.merge.strategy and basinvcs.hive.rules):

- ``average``: z ← z + lr·Δ (lr 1.0: plain federated averaging, the round's Δ taken whole);
- ``nesterov``: SGD with Nesterov momentum, as DiLoCo's outer optimiser and in PyTorch's SGD
  (dampening 0): m ← μ m + g; z ← z − lr (g + μ m); lr 0.7, μ 0.9, DiLoCo's values;
- ``fedadam``: Adam on g as FedAdam (Reddi et al. 2021, Algorithm 2): m ← β1 m + (1 − β1) g;
  v ← β2 v + (1 − β2) g²; z ← z − lr m / (√v + ε), m and v from zero, no bias correction;
  β1 0.9, β2 0.99, ε 1e-3 (the paper's), lr 0.1 (a step of about lr per coordinate, whatever Δ's
  size: tune it to the basin's scale).

An optimiser's state (its hyperparameters, step count and buffers) goes to and from a JSON-able
dict (`to_dict`, `restore`), exactly (Python's JSON writes floats so that they read back
bit-identical), so a coordinator can persist it across restarts. A step is elementwise float64
arithmetic in a fixed order, so the same z, Δ and state always give the same bits. A step that
would leave the finite numbers is refused and changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import BasinError

# measured on MiniLM (docs/experiments/hive.md): plain averaging kept 0.87-0.91 of joint training
# at H = 1, Nesterov at DiLoCo's lr 0.7 and momentum 0.9 0.52 (it overshoots this basin)
DEFAULT_OPTIMIZER = "average"


class OuterError(BasinError):
    """An outer step refused (non-finite or mismatched z or Δ, a result out of the float range),
    an unusable hyperparameter, or an optimiser state that does not read back."""


class OuterOptimizer:
    """Steps z by the aggregated change Δ. Subclasses set `name`, `summary`, `defaults` (their
    hyperparameters) and `buffers` (the names of their per-coordinate state) and implement
    `_update`."""

    name: str
    summary: str
    defaults: dict[str, float] = {}
    buffers: tuple[str, ...] = ()

    def __init__(self, **hyper: float) -> None:
        unknown = sorted(set(hyper) - set(self.defaults))
        if unknown:
            raise OuterError(f"outer optimiser {self.name} has no hyperparameter {unknown[0]!r}")
        self.hyper = {k: _number(hyper.get(k, v), k) for k, v in self.defaults.items()}
        self._check(self.hyper)
        self.steps = 0
        self.state: dict[str, np.ndarray] = {}

    @property
    def dim(self) -> int | None:
        """The number of coordinates the buffers hold; None before the first step."""
        return len(next(iter(self.state.values()))) if self.state else None

    def step(self, z: Sequence[float], delta: Sequence[float]) -> list[float]:
        """The new z after applying the round's aggregated change `delta` (g = −delta)."""
        za, da = _vector(z, "z"), _vector(delta, "Δ")
        if za.shape != da.shape:
            raise OuterError(f"z has {za.size} coordinates, Δ {da.size}")
        if self.dim is not None and self.dim != za.size:
            raise OuterError(f"the optimiser state is for {self.dim} coordinates, z has {za.size}")
        state = self.state or {b: np.zeros_like(za) for b in self.buffers}
        with np.errstate(all="ignore"):
            new_z, new_state = self._update(za, -da, dict(state))
        for what, a in [("z", new_z), *new_state.items()]:
            bad = np.flatnonzero(~np.isfinite(a))
            if bad.size:
                raise OuterError(f"outer step refused: {what}[{bad[0]}] would be {a[bad[0]]}")
        self.state, self.steps = new_state, self.steps + 1
        return new_z.tolist()

    def _update(
        self, z: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """New z and buffers from z, the outer gradient g = −Δ and the buffers (zero at first)."""
        raise NotImplementedError

    def _check(self, hyper: dict[str, float]) -> None:
        """Refuse unusable hyperparameters (each already a finite number)."""
        if hyper["lr"] <= 0:
            raise OuterError(f"lr {hyper['lr']} must be > 0")

    def to_dict(self) -> dict[str, Any]:
        """The whole state as JSON-able values: restore(to_dict()) continues bit-identically."""
        return {
            "optimizer": self.name,
            "hyper": dict(self.hyper),
            "steps": self.steps,
            "buffers": {k: v.tolist() for k, v in self.state.items()},
        }


REGISTRY: dict[str, type[OuterOptimizer]] = {}


def register(cls: type[OuterOptimizer]) -> type[OuterOptimizer]:
    REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> type[OuterOptimizer]:
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(REGISTRY)
        raise OuterError(f"unknown outer optimiser {name!r} (known: {known})") from None


def create(name: str = DEFAULT_OPTIMIZER, **hyper: float) -> OuterOptimizer:
    """A fresh optimiser `name` (no steps taken), its defaults overridden by `hyper`."""
    return get(name)(**hyper)


def restore(data: Mapping[str, Any]) -> OuterOptimizer:
    """The optimiser `to_dict` described, checked: refused unless it is exactly such a dict."""
    if not isinstance(data, Mapping) or set(data) != {"optimizer", "hyper", "steps", "buffers"}:
        raise OuterError("optimiser state must be a dict of optimizer, hyper, steps and buffers")
    name, hyper, steps, buffers = data["optimizer"], data["hyper"], data["steps"], data["buffers"]
    if not isinstance(name, str):
        raise OuterError(f"optimiser name {name!r} is not a string")
    if not isinstance(hyper, Mapping) or set(hyper) != set(get(name).defaults):
        raise OuterError(f"optimiser state's hyper must name exactly {sorted(get(name).defaults)}")
    opt = create(name, **hyper)
    if type(steps) is not int or steps < 0:
        raise OuterError(f"optimiser state's steps {steps!r} must be an integer >= 0")
    if not isinstance(buffers, Mapping):
        raise OuterError("optimiser state's buffers must be a dict")
    expected = set(opt.buffers) if steps and opt.buffers else set()
    if set(buffers) != expected:
        raise OuterError(f"optimiser state after {steps} steps needs buffers {sorted(expected)}")
    state = {b: _vector(buffers[b], f"buffer {b}") for b in opt.buffers if b in buffers}
    if len({v.size for v in state.values()}) > 1:
        raise OuterError("optimiser state's buffers have different lengths")
    opt.state, opt.steps = state, steps
    return opt


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OuterError(f"{what} {value!r} is not a number")
    try:
        v = float(value)
    except OverflowError:
        raise OuterError(f"{what} is out of the float range") from None
    if not math.isfinite(v):
        raise OuterError(f"{what} {v} must be finite")
    return v


def _vector(values: Sequence[float], what: str) -> np.ndarray:
    if isinstance(values, (str, bytes, Mapping)):
        raise OuterError(f"{what} must be a vector of numbers")
    try:
        a = np.array(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise OuterError(f"{what} is not a vector of numbers: {exc}") from None
    if a.ndim != 1 or a.size == 0:
        raise OuterError(f"{what} must be a vector of d >= 1 numbers, not shape {a.shape}")
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise OuterError(f"{what} has {a[bad[0]]} at coordinate {bad[0]}")
    return a


def _fraction(hyper: dict[str, float], key: str) -> None:
    if not 0 <= hyper[key] < 1:
        raise OuterError(f"{key} {hyper[key]} must be >= 0 and < 1")


@register
class Average(OuterOptimizer):
    name = "average"
    summary = "z + lr·Δ: federated averaging (lr 1: the round's Δ taken whole)"
    defaults = {"lr": 1.0}

    def _update(self, z, g, state):
        return z - self.hyper["lr"] * g, state


@register
class Nesterov(OuterOptimizer):
    name = "nesterov"
    summary = "SGD with Nesterov momentum on −Δ (DiLoCo's outer optimiser: lr 0.7, momentum 0.9)"
    defaults = {"lr": 0.7, "momentum": 0.9}
    buffers = ("momentum",)

    def _check(self, hyper):
        super()._check(hyper)
        _fraction(hyper, "momentum")

    def _update(self, z, g, state):
        lr, mu = self.hyper["lr"], self.hyper["momentum"]
        m = mu * state["momentum"] + g
        return z - lr * (g + mu * m), {"momentum": m}


@register
class FedAdam(OuterOptimizer):
    name = "fedadam"
    summary = "Adam on −Δ (FedAdam, Reddi et al. 2021: β1 0.9, β2 0.99, ε 1e-3, lr 0.1)"
    defaults = {"lr": 0.1, "beta1": 0.9, "beta2": 0.99, "eps": 1e-3}
    buffers = ("m", "v")

    def _check(self, hyper):
        super()._check(hyper)
        _fraction(hyper, "beta1")
        _fraction(hyper, "beta2")
        if hyper["eps"] <= 0:
            raise OuterError(f"eps {hyper['eps']} must be > 0")

    def _update(self, z, g, state):
        h = self.hyper
        m = h["beta1"] * state["m"] + (1 - h["beta1"]) * g
        v = h["beta2"] * state["v"] + (1 - h["beta2"]) * (g * g)
        return z - h["lr"] * m / (np.sqrt(v) + h["eps"]), {"m": m, "v": v}


OPTIMIZERS = tuple(REGISTRY)  # in registration order
