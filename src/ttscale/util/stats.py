"""The statistics of every report: random budget-n subsets of stored pools, bootstrap
intervals over problems, paired differences, AUROC."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def subset_draws(
    pool_sizes: Sequence[int], n: int, n_boot: int, rng: np.random.Generator
) -> Iterator[tuple[int, int, np.ndarray]]:
    """(draw b, problem p, indices of a random n-subset of problem p's pool), for every draw
    and problem, in that order: the replay of any strategy at budget n iterates this, so the
    same seed gives every strategy the same subsets."""
    for b in range(n_boot):
        for p, size in enumerate(pool_sizes):
            yield b, p, rng.permutation(size)[: min(n, size)]


def problem_ci(values: np.ndarray, seed: int = 0, n_boot: int = 1000) -> tuple[float, float]:
    """95% bootstrap interval of a mean over problems. Each call draws from its own stream
    of `seed`, so an interval does not depend on what else a report computed before it,
    and two results on the same problems are resampled alike."""
    idx = np.random.default_rng(seed).integers(0, len(values), size=(n_boot, len(values)))
    lo, hi = np.percentile(values[idx].mean(axis=1), [2.5, 97.5])
    return float(lo), float(hi)


def paired_difference(
    values: Sequence[float] | np.ndarray,
    baseline: Sequence[float] | np.ndarray,
    seed: int = 0,
    n_boot: int = 1000,
) -> dict[str, float]:
    """Mean per-problem difference of two results on the same problems, with its 95%
    bootstrap interval over problems."""
    diff = np.asarray(values, dtype=float) - np.asarray(baseline, dtype=float)
    lo, hi = problem_ci(diff, seed, n_boot)
    return {"difference": float(diff.mean()), "ci_low": lo, "ci_high": hi}


def auroc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); nan without both classes."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))
