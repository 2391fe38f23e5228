"""Few-seed statistics for RL learning curves (Agarwal et al., NeurIPS 2021, "Deep RL at the edge
of the statistical precipice"; the public `rliable` library).

With 3-10 seeds per method a mean is dominated by one lucky or unlucky run and a median throws
most runs away. The paper's remedy, followed here:

- `iqm`: the interquartile mean, the 25 % trimmed mean. Same semantics as rliable's
  `aggregate_iqm`, which is `scipy.stats.trim_mean(x, 0.25)`: sort, drop `int(0.25 * n)` values
  from each end (whole values, no fractional weights), average the rest. So n = 1..3 keep every
  value, n = 5 keeps the middle 3, n = 8 the middle 4.
- `stratified_bootstrap_ci`: a percentile bootstrap confidence interval where seeds are resampled
  with replacement independently within each task (stratum), so every replicate keeps each
  task's number of runs (rliable's `StratifiedBootstrap` with `task_bootstrap=False`).
- `probability_of_improvement`: P(X > Y) + 0.5 P(X = Y) over all pairs of runs, i.e. the
  Mann-Whitney U statistic divided by n_x * n_y, averaged over tasks (rliable's
  `probability_of_improvement`; identical runs give 0.5 either way). Higher is better for X; for
  costs such as tokens-to-target pass the negated values.

Sample-efficiency summaries of one learning curve (held-out success against world tokens, the
curve linear between evaluation points):

- `tokens_to_target`: first world-token count at which success reaches the target, linearly
  interpolated between the last eval point below the target and the first at or above it;
  `math.inf` when the curve never reaches it (a float, so arrays of results stay numeric).
- `auc`: area under the curve over [0, budget] divided by the budget (trapezoid rule on the
  piecewise-linear curve, constant extrapolation before the first and after the last point),
  so a curve that is 1.0 everywhere scores 1.0.

Everything here is pure numpy, with no state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np

ArrayLike = np.ndarray | list | tuple
Statistic = Callable[[dict[str, np.ndarray]], np.ndarray | float]


class Interval(NamedTuple):
    """A point estimate and its bootstrap confidence interval (floats, or arrays of one shape)."""

    point: np.ndarray | float
    low: np.ndarray | float
    high: np.ndarray | float


def _scalar(a: np.ndarray) -> np.ndarray | float:
    return float(a) if np.ndim(a) == 0 else a


def iqm(x: ArrayLike, axis: int | None = None) -> np.ndarray | float:
    """Interquartile mean: drop `int(0.25 * n)` values from each end of the sorted `x`, average
    the rest (scipy.stats.trim_mean(x, 0.25)).

    x: scores, any shape; axis None pools every value (rliable's IQM over runs x tasks), an int
    trims along that axis only (e.g. axis=-1 over seeds for a batch of bootstrap replicates).
    Returns a float for axis None or 1-D input, else an array without `axis`. +-inf is allowed
    (it is trimmed when it lies in an outer quartile); NaN is an error.
    """
    a = np.asarray(x, dtype=float)
    if np.isnan(a).any():
        raise ValueError("iqm: scores contain NaN")
    a = a.reshape(-1) if axis is None else np.moveaxis(a, axis, -1)
    n = a.shape[-1]
    if n == 0:
        raise ValueError("iqm of an empty array")
    cut = int(0.25 * n)
    kept = np.sort(a, axis=-1)[..., cut : n - cut]
    return _scalar(kept.mean(axis=-1))


def pooled_iqm(scores_by_task: Mapping[str, np.ndarray]) -> np.ndarray | float:
    """IQM of every run of every task pooled (rliable's aggregate IQM); a `Statistic`.

    scores_by_task: task -> (..., n_seeds); the leading axes (e.g. bootstrap replicates) must
    agree across tasks. Returns (...) (a float for 1-D inputs).
    """
    return iqm(np.concatenate([np.asarray(v, float) for v in scores_by_task.values()], -1), -1)


def _percentiles(stats: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile CI along axis 0 of `stats` (reps, ...). Linear interpolation as numpy's
    default; where that meets an infinite replicate (inf - inf = NaN) the nearest order
    statistic on the outer side is used, so an unbounded interval reads as +-inf, not NaN."""
    q_lo, q_hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
    with np.errstate(invalid="ignore"):
        lo = np.percentile(stats, q_lo, axis=0)
        hi = np.percentile(stats, q_hi, axis=0)
    lo = np.where(np.isnan(lo), np.percentile(stats, q_lo, axis=0, method="lower"), lo)
    hi = np.where(np.isnan(hi), np.percentile(stats, q_hi, axis=0, method="higher"), hi)
    return lo, hi


def stratified_bootstrap_ci(
    scores_by_task: Mapping[str, ArrayLike],
    statistic: Statistic,
    reps: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    *,
    vectorised: bool = True,
) -> Interval:
    """Point estimate and percentile bootstrap (1 - alpha) CI of `statistic`, seeds resampled
    with replacement independently within each task.

    scores_by_task: task (stratum) -> array (..., n_seeds): seeds on the LAST axis, any leading
        axes (e.g. G points of a learning curve) are carried along. Tasks may differ in n_seeds.
    statistic: maps a dict shaped like `scores_by_task` to the estimate. With `vectorised`
        (default) it is called once with every task's array resampled to (reps, ..., n_seeds)
        and must reduce the last axis (and combine tasks) to (reps, ...); `pooled_iqm` and
        `lambda d: d["t"].mean(-1)` both qualify. With `vectorised=False` it is called per
        replicate on (..., n_seeds) arrays. The same resampling indices are drawn either way.
    reps: bootstrap replicates; alpha: 1 - coverage (0.05 = 95 % CI); seed: numpy RNG seed.
    Returns Interval(point, low, high): floats, or arrays of the statistic's shape.
    """
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    data = {k: np.asarray(v, dtype=float) for k, v in scores_by_task.items()}
    if not data:
        raise ValueError("scores_by_task is empty")
    for k, v in data.items():
        if v.ndim == 0 or v.shape[-1] == 0:
            raise ValueError(f"task {k!r} has no seeds (arrays are (..., n_seeds))")
    point = np.asarray(statistic(data), dtype=float)
    rng = np.random.default_rng(seed)
    # one (reps, n_seeds) index matrix per task, drawn in dict order: the strata are independent
    idx = {k: rng.integers(0, v.shape[-1], size=(reps, v.shape[-1])) for k, v in data.items()}
    if vectorised:
        # v[..., idx] is (..., reps, n); move reps to the front -> (reps, ..., n)
        boot = {k: np.moveaxis(v[..., idx[k]], -2, 0) for k, v in data.items()}
        stats = np.asarray(statistic(boot), dtype=float)
        if stats.shape != (reps, *point.shape):
            raise ValueError(
                f"a vectorised statistic must return (reps, ...) = {(reps, *point.shape)}, got "
                f"{stats.shape}; reduce the last (seed) axis, or pass vectorised=False"
            )
    else:
        stats = np.stack([
            np.asarray(statistic({k: v[..., idx[k][r]] for k, v in data.items()}), dtype=float)
            for r in range(reps)
        ])
    lo, hi = _percentiles(stats, alpha)
    return Interval(_scalar(point), _scalar(lo), _scalar(hi))


def _poi_pairs(x: ArrayLike, y: ArrayLike) -> float:
    xs, ys = np.asarray(x, float).reshape(-1), np.asarray(y, float).reshape(-1)
    if xs.size == 0 or ys.size == 0:
        raise ValueError("probability_of_improvement needs at least one run on each side")
    if np.isnan(xs).any() or np.isnan(ys).any():
        raise ValueError("probability_of_improvement: scores contain NaN")
    greater = (xs[:, None] > ys[None, :]).mean()  # (n_x, n_y) pairs
    ties = (xs[:, None] == ys[None, :]).mean()
    return float(greater + 0.5 * ties)


def probability_of_improvement(
    x: ArrayLike | Mapping[str, ArrayLike], y: ArrayLike | Mapping[str, ArrayLike]
) -> float:
    """P(X > Y) + 0.5 P(X = Y) over all (run of X, run of Y) pairs, in [0, 1].

    x, y: scores of the runs (n_x,), (n_y,) of one task, or dicts task -> runs with the same
    tasks on both sides, in which case the per-task probabilities are averaged over tasks
    (rliable). Higher scores are better: for a cost (tokens to target), pass -cost.
    """
    if isinstance(x, Mapping) != isinstance(y, Mapping):
        raise TypeError("pass two arrays or two task -> array dicts, not one of each")
    if isinstance(x, Mapping) and isinstance(y, Mapping):
        if set(x) != set(y) or not x:
            raise ValueError(f"tasks differ or are empty: {sorted(x)} vs {sorted(y)}")
        return float(np.mean([_poi_pairs(x[k], y[k]) for k in x]))
    return _poi_pairs(x, y)


def _curve(tokens: ArrayLike, success: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t, s = np.asarray(tokens, float).reshape(-1), np.asarray(success, float).reshape(-1)
    if t.shape != s.shape or t.size == 0:
        raise ValueError(f"a curve needs equal, non-empty tokens and success; got {t.size}, "
                         f"{s.size}")
    if np.any(np.diff(t) < 0):
        raise ValueError("curve tokens must be non-decreasing (sort the eval points by tokens)")
    return t, s


def tokens_to_target(curve_tokens: ArrayLike, curve_success: ArrayLike, target: float) -> float:
    """World tokens at which held-out success first reaches `target`.

    curve_tokens: (E,) world tokens at each evaluation, non-decreasing (the initial eval at 0);
    curve_success: (E,) held-out success at those points; target: success level.
    Returns the tokens of the first eval point if it already meets the target; otherwise the
    linear interpolation between the last point below and the first point at or above the
    target (the first crossing, later dips ignored); `math.inf` when no point reaches it.
    """
    t, s = _curve(curve_tokens, curve_success)
    hit = np.flatnonzero(s >= target)
    if hit.size == 0:
        return math.inf
    i = int(hit[0])
    if i == 0:
        return float(t[0])
    frac = (target - s[i - 1]) / (s[i] - s[i - 1])  # s[i-1] < target <= s[i]
    return float(t[i - 1] + frac * (t[i] - t[i - 1]))


def auc(tokens: ArrayLike, success: ArrayLike, budget: float) -> float:
    """Area under held-out success vs world tokens on [0, budget], divided by `budget`.

    tokens: (E,) world tokens of each eval point, non-decreasing; success: (E,); budget: world
    tokens (> 0). The curve is linear between points and constant before the first and after
    the last one (the last eval carried forward to the budget); points past the budget are cut
    at the budget by interpolation. Trapezoid rule on that curve, so it is exact. Returns the
    mean success over the budget, in [0, 1] when success is.
    """
    if budget <= 0:
        raise ValueError(f"budget must be > 0, got {budget}")
    t, s = _curve(tokens, success)
    inner = t[(t > 0) & (t < budget)]
    grid = np.concatenate([[0.0], inner, [float(budget)]])
    values = np.interp(grid, t, s)
    return float(np.trapezoid(values, grid) / budget)


def interpolate_curve(tokens: ArrayLike, success: ArrayLike, grid: ArrayLike) -> np.ndarray:
    """The curve (linear between points, constant outside them) read at `grid` (G,) -> (G,);
    used to average curves of seeds whose eval points fall at different world tokens."""
    t, s = _curve(tokens, success)
    return np.interp(np.asarray(grid, float), t, s)


__all__ = ["Interval", "auc", "interpolate_curve", "iqm", "pooled_iqm",
           "probability_of_improvement", "stratified_bootstrap_ci", "tokens_to_target"]
