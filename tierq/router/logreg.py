"""L2-regularised logistic regression in NumPy (truncated Newton), out-of-fold scores, and ROC AUC.

Features are a `Design` (dense float32 columns and sparse ones) or a plain dense matrix. The Newton
step is solved by conjugate gradients with Hessian-vector products, so the cost grows with the stored
entries (rows x dense columns, plus the sparse non-zeros) and the width, never with columns squared.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tierq.router.design import Design

Array = npt.NDArray[np.float64]
Matrix = npt.NDArray[np.float32]
Features = Matrix | Design


def design(x: Features) -> Design:
    """`x` as a Design (a dense matrix is wrapped, not copied)."""
    return x if isinstance(x, Design) else Design.of(x)


@dataclass(frozen=True, slots=True)
class Linear:
    """Fitted weights and intercept: the probability of the positive class is sigmoid(x . w + b)."""

    weights: npt.NDArray[np.float32]
    intercept: float

    def predict(self, x: Features) -> Array:
        """The probability of the positive class for each row of `x`."""
        return _sigmoid(design(x) @ self.weights + self.intercept)


def _sigmoid(z: Array) -> Array:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)), dtype=np.float64)


def _loss(x: Design, y: Array, w: Array, b: float, l2: float) -> float:
    z = x @ w + b
    return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * float(w @ w))


def fit(features: Features, y: Array, l2: float = 1.0, newton_steps: int = 30, cg_steps: int = 60,
        tol: float = 1e-5, start: Linear | None = None) -> Linear:
    """Minimise the log-loss plus l2/2 |w|^2 (the intercept is not penalised). `start` (a fit of the same
    columns, e.g. at a nearby l2) is where the search begins: the same optimum, in fewer steps."""
    x = design(features)
    n, d = x.shape
    if start is not None:
        if len(start.weights) != d:
            raise ValueError(f"a start of {len(start.weights)} weights for {d} columns")
        if not (np.isfinite(start.weights).all() and np.isfinite(start.intercept)):
            raise ValueError("a start with weights that are not finite")
        w, b = start.weights.astype(np.float64), float(start.intercept)
    else:
        w = np.zeros(d)
        mean = float(np.clip(y.mean(), 1e-3, 1 - 1e-3)) if n else 0.5
        b = float(np.log(mean / (1 - mean)))
    loss = _loss(x, y, w, b, l2)
    first = 0.0
    for _ in range(newton_steps):
        p = _sigmoid(x @ w + b)
        residual = p - y
        grad_w = x.transpose_times(residual) + l2 * w
        grad_b = float(residual.sum())
        if max(float(np.abs(grad_w).max(initial=0.0)), abs(grad_b)) < tol * max(1.0, n):
            break
        curvature = p * (1 - p) + 1e-12
        size = float(np.sqrt(grad_w @ grad_w + grad_b * grad_b))
        first = first or size
        # Inexact Newton: a rough step while far from the optimum, a precise one near it.
        forcing = min(0.5, float(np.sqrt(size / first)))
        step_w, step_b = _conjugate_gradient(x, curvature, l2, grad_w, grad_b, cg_steps, forcing)
        scale, trial = 1.0, float("inf")
        while scale > 1e-4:  # backtracking: a Newton step may overshoot far from the optimum
            trial = _loss(x, y, w - scale * step_w, b - scale * step_b, l2)
            if trial <= loss:
                break
            scale *= 0.5
        if trial > loss:
            break  # no step lowers the loss: this is the optimum, as far as float32 can tell
        w, b, previous, loss = w - scale * step_w, b - scale * step_b, loss, trial
        if previous - loss < tol * max(1.0, abs(previous)) * 1e-2:
            break
    return Linear(w.astype(np.float32), b)


def _conjugate_gradient(x: Design, curvature: Array, l2: float, grad_w: Array, grad_b: float,
                        steps: int, forcing: float) -> tuple[Array, float]:
    """Solve H s = g for the Newton step s, H the Hessian of the loss in (w, b), until the residual is
    `forcing` times the gradient (or 1e-4 times, if that is larger)."""

    def hessian_times(v_w: Array, v_b: float) -> tuple[Array, float]:
        u = curvature * (x @ v_w + v_b)
        return x.transpose_times(u) + l2 * v_w, float(u.sum())

    s_w, s_b = np.zeros_like(grad_w), 0.0
    r_w, r_b = grad_w.copy(), grad_b
    p_w, p_b = r_w.copy(), r_b
    rr = float(r_w @ r_w) + r_b * r_b
    stop = max(forcing, 1e-4) ** 2 * rr
    for _ in range(steps):
        h_w, h_b = hessian_times(p_w, p_b)
        curvature_along = float(p_w @ h_w) + p_b * h_b
        if curvature_along <= 0:
            break
        alpha = rr / curvature_along
        s_w += alpha * p_w
        s_b += alpha * p_b
        r_w -= alpha * h_w
        r_b -= alpha * h_b
        new_rr = float(r_w @ r_w) + r_b * r_b
        if new_rr < stop:
            break
        p_w = r_w + (new_rr / rr) * p_w
        p_b = r_b + (new_rr / rr) * p_b
        rr = new_rr
    return s_w, s_b


def folds(n: int, k: int, seed: int, groups: npt.NDArray[np.int64] | None = None) -> list[npt.NDArray[np.int64]]:
    """`k` disjoint random index sets covering range(n). Rows of one group (`groups[i]`, numbered 0, 1, ...
    by first occurrence) share a fold: a prompt given twice must not be scored by a model that saw it, or
    its out-of-fold score flatters the model. Without repeats, the folds are those of `groups=None`."""
    if groups is None:
        order = np.random.default_rng(seed).permutation(n)
        return [np.sort(part) for part in np.array_split(order, k)]
    return [np.flatnonzero(np.isin(groups, part)) for part in folds(int(groups.max(initial=-1)) + 1, k, seed)]


def groups_of(keys: Sequence[str]) -> npt.NDArray[np.int64]:
    """Each key's group for `folds`: equal keys one group, numbered by first occurrence."""
    first: dict[str, int] = {}
    return np.fromiter((first.setdefault(key, len(first)) for key in keys), dtype=np.int64, count=len(keys))


def out_of_fold(features: Features, y: Array, k: int, seed: int, l2: float,
                groups: npt.NDArray[np.int64] | None = None) -> Array:
    """Each row's score from a model fitted without its fold: honest scores to choose a threshold on."""
    return out_of_fold_path(features, y, k, seed, (l2,), groups)[0][1]


def out_of_fold_path(features: Features, y: Array, k: int, seed: int, grid: Sequence[float],
                     groups: npt.NDArray[np.int64] | None = None,
                     on_fold: Callable[[int], None] | None = None) -> list[tuple[float, Array]]:
    """(l2, out-of-fold scores) for every l2 of `grid`, strongest first. A fold's fit at each l2 starts from
    its fit at the stronger one before, which is near: the path costs little more than its weakest fit.
    `on_fold` hears each fold's number (1 to k) before its fits."""
    x = design(features)
    strongest_first = sorted(grid, reverse=True)
    scores = np.zeros((len(strongest_first), len(y)))
    for number, part in enumerate(folds(len(y), k, seed, groups), start=1):  # a fold at a time: memory as one fit
        if on_fold is not None:
            on_fold(number)
        train = np.setdiff1d(np.arange(len(y)), part)
        x_train, x_part = x.take(train), x.take(part)
        model: Linear | None = None
        for at, l2 in enumerate(strongest_first):
            model = fit(x_train, y[train], l2, start=model)
            scores[at, part] = model.predict(x_part)
    return list(zip(strongest_first, scores, strict=True))


def log_loss(scores: Array, y: Array) -> float:
    """Mean negative log-likelihood of `y` under `scores`."""
    p = np.clip(scores, 1e-9, 1 - 1e-9)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def auc(scores: Array, labels: Array) -> float:
    """Area under the ROC curve (ties count half); NaN with only one class."""
    positive = labels == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(average, counts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
