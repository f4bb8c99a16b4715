"""`ttscale train-reward`: fit the reward over several layers (`verifiers/layer_reward.py`) on
what `collect-layers` gathered, choose the reader by validation, and report it against the
vote share of the same samples.

Protocol (no test problem is ever read: the collection holds training splits only):
- the problems are split once, by problem, into a fitting part and a held-out validation
  part (`val_fraction`, seeded);
- every reader (what it reads, which layers, its L2 strength) is scored by a K-fold
  cross-validation over the fitting part's problems, and the one with the best mean
  within-problem AUROC is chosen;
- the chosen reader is refitted on the whole fitting part and judged once on the held-out
  problems: alone, beside the vote share of the same 8 samples, and combined with it (a
  two-input logistic regression fitted on the fitting part's out-of-fold predictions);
- the shipped reward is then refitted on all the problems.

Labels are outcomes: the collection's solutions are sampled independently, so the prefixes
Math-Shepherd's soft labels need are almost never shared (the count is reported).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.quality import vote_shares
from ..util.jsonl import read_jsonl
from ..util.stats import auroc, problem_ci
from ..verifiers.layer_reward import SOLUTION_KINDS, LayerReward, layer_index, solution_vectors
from .layer_data import answers_path, judge_path, states_path


class TrainRewardError(RuntimeError):
    pass


@dataclass
class Solution:
    features: dict[str, np.ndarray]
    correct: bool
    vote_share: float
    p_yes: float | None = None  # the judge's own P(Yes), in a judge probe's data


@dataclass
class Reader:
    """One candidate reader: what it reads, of which layers, how strongly shrunk.

    within: fit a token probe on each problem's states minus their mean over the problem's
    own solutions (a conditional logit). Picking needs the ranking within one problem, and a
    plain fit also spends its weights on what tells easy problems from hard ones (the pooled
    AUROC); a direction that moves with difficulty across problems but is noise within one
    then scrambles the ranking it is needed for. A linear score ranks a problem's solutions
    the same with or without the centring, so the fitted weights read raw states as well;
    they are then scaled and shifted by a one-input logistic fit on the raw states, so the
    score is still a probability (weighted Best-of-N sums them)."""

    kind: str
    layers: tuple[int, ...]
    l2: float
    components: int = 128  # principal directions kept of the standardised states
    within: bool = False

    @property
    def label(self) -> str:
        centred = ", within-problem" if self.within else ""
        return f"{self.kind} @ {','.join(map(str, self.layers))} (l2 {self.l2:g}, pca {self.components}{centred})"


def load_problems(out_dir: Path, judge: str | None = None) -> tuple[list[list[Solution]], list[int], tuple[str, ...]]:
    """Every stored problem with states: its solutions' features, outcomes and vote shares
    among the problem's own samples; the layers the states hold; and the readers they serve:
    every kind when each problem has its full states (`states/`), only the answer-token
    reader when some have only the committed answer states (`answers/`, a fresh checkout).
    judge: a model's reading as the outcome judge instead (`judge-MODEL/`), for the judge
    probe alone."""
    records = read_jsonl(out_dir / "samples.jsonl")
    if judge is not None:
        return _load_judgements(out_dir, records, judge)
    problems, layers, full = [], None, True
    for rec in records:
        path = states_path(out_dir, rec["id"])
        if not path.exists():
            path, full = answers_path(out_dir, rec["id"]), False
            if not path.exists():
                continue
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        layers = [int(x) for x in arrays["layers"]]
        sols = []
        for i, (s, share) in enumerate(zip(rec["solutions"], vote_shares(rec["solutions"]), strict=True)):
            features = {"answer_mean": arrays["answer_mean"][i]}
            if "step_solution" in arrays:
                mine = arrays["step_solution"] == i
                features |= {k: arrays[k][mine] for k in ("step_last", "step_mean", "step_ends")}
                features |= {k: arrays[k][i] for k in ("answer_last", "final")}
            sols.append(Solution(features, bool(s["correct"]), share))
        problems.append(sols)
    if not problems:
        raise TrainRewardError(f"no problem in {out_dir} has its states: run collect-layers (or --rebuild)")
    return problems, layers or [], SOLUTION_KINDS if full else ("answer",)


def _load_judgements(
    out_dir: Path, records: Sequence[dict[str, Any]], judge: str
) -> tuple[list[list[Solution]], list[int], tuple[str, ...]]:
    problems, layers = [], None
    for rec in records:
        path = judge_path(out_dir, rec["id"], judge)
        if not path.exists():
            continue
        with np.load(path) as z:
            states, p_yes, layers = z["judge"], z["p_yes"], [int(x) for x in z["layers"]]
        shares = vote_shares(rec["solutions"])
        problems.append(
            [
                Solution({"judge": states[i]}, bool(s["correct"]), share, float(p_yes[i]))
                for i, (s, share) in enumerate(zip(rec["solutions"], shares, strict=True))
            ]
        )
    if not problems:
        raise TrainRewardError(f"no problem in {out_dir} has {judge}'s judgements: run collect-layers --judge")
    return problems, layers or [], ("judge",)


def within_auroc(
    scores: Sequence[Sequence[float]], problems: Sequence[Sequence[Solution]]
) -> tuple[float, list[float]]:
    """Mean AUROC within a problem over the problems with both right and wrong solutions,
    and each one's (for intervals)."""
    each = [auroc(s, [x.correct for x in p]) for s, p in zip(scores, problems, strict=True)]
    each = [a for a in each if not math.isnan(a)]
    return (float(np.mean(each)) if each else float("nan")), each


def _vectors(reader: Reader, problems: Sequence[Sequence[Solution]], available: Sequence[int]) -> list[np.ndarray]:
    rows = layer_index(available, reader.layers)
    return [solution_vectors(reader.kind, s.features, rows) for p in problems for s in p]


def fit_reader(
    reader: Reader, problems: Sequence[Sequence[Solution]], available: Sequence[int], model_sha256: str = ""
) -> LayerReward:
    """Standardise, project on the leading principal directions (the states are 896 units a
    layer and the problems a few hundred: the projection is the first shrinkage, and it keeps
    a fit to seconds), then a logistic regression (token probes) or the gated step reward."""
    from sklearn.decomposition import PCA

    vectors = _vectors(reader, problems, available)
    y = np.array([s.correct for p in problems for s in p], dtype=float)
    stacked = np.concatenate(vectors)
    mean, scale = stacked.mean(axis=0), stacked.std(axis=0) + 1e-6
    standardised = (stacked - mean) / scale
    k = min(reader.components, stacked.shape[1], len(stacked) - 1)
    projection = PCA(n_components=k, random_state=0).fit(standardised).components_.T
    if reader.kind in ("final", "answer", "judge"):
        x = standardised @ projection
        sizes = [len(p) for p in problems]
        weights, bias = _within_logistic(x, y, sizes, reader.l2) if reader.within else _logistic(x, y, reader.l2)
        return LayerReward(
            reader.kind, reader.layers, mean, scale, projection, weights, bias, model_sha256=model_sha256
        )
    z = [((v - mean) / scale) @ projection for v in vectors]
    w, b, u, c = fit_gated(z, y, reader.l2)
    return LayerReward(reader.kind, reader.layers, mean, scale, projection, w, b, u, c, model_sha256=model_sha256)


def _logistic(x: np.ndarray, y: np.ndarray, l2: float, intercept: bool = True) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0 / l2, max_iter=2000, fit_intercept=intercept).fit(x, y)
    return model.coef_[0], float(model.intercept_[0]) if intercept else 0.0


def _within_logistic(x: np.ndarray, y: np.ndarray, sizes: Sequence[int], l2: float) -> tuple[np.ndarray, float]:
    """The within-problem reader's weights and bias (`Reader.within`): a logistic fit without
    intercept on the rows minus their problem's mean, over the problems with both right and
    wrong solutions (the others hold no ranking), then calibrated on the raw rows."""
    starts = np.cumsum([0, *sizes])
    rows, labels = [], []
    for a, b in itertools.pairwise(starts):
        if 0 < y[a:b].sum() < b - a:
            rows.append(x[a:b] - x[a:b].mean(axis=0))
            labels.append(y[a:b])
    if not rows:
        raise TrainRewardError("a within-problem reader needs problems with both right and wrong solutions")
    direction, _ = _logistic(np.concatenate(rows), np.concatenate(labels), l2, intercept=False)
    (slope,), bias = _logistic((x @ direction)[:, None], y, 1e-6)
    # a slope at or below zero would reverse the ranking the direction was fitted for
    return direction * max(slope, 1e-3), bias


def gated_loss(theta: np.ndarray, z: np.ndarray, seg: np.ndarray, y: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
    """The gated step reward's L2-penalised log loss and its gradient. theta = (w, u, c, b);
    z holds every solution's steps (rows), seg the solution of each row; the logit of
    solution i is sum_s g_s r_s / sum_s g_s + b (module docstring)."""
    n, k = len(y), z.shape[1]
    w, u, c, b = theta[:k], theta[k : 2 * k], theta[2 * k], theta[2 * k + 1]
    r = z @ w
    g = 1.0 / (1.0 + np.exp(-np.clip(z @ u + c, -40, 40)))
    den = np.bincount(seg, g, n) + 1e-9
    m = np.bincount(seg, g * r, n) / den
    p = 1.0 / (1.0 + np.exp(-np.clip(m + b, -40, 40)))
    nll = -np.sum(y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12))
    a = ((p - y) / den)[seg]  # d loss / d (a row's share of its solution's logit)
    dg = a * g * (1 - g) * (r - m[seg])
    grad = np.concatenate([z.T @ (a * g) + 2 * l2 * w, z.T @ dg + 2 * l2 * u, [dg.sum(), np.sum(p - y)]])
    return float(nll + l2 * (w @ w + u @ u)), grad


def fit_gated(steps: Sequence[np.ndarray], y: np.ndarray, l2: float) -> tuple[np.ndarray, float, np.ndarray, float]:
    """(w, b, u, c) of the gated step reward, by L-BFGS on `gated_loss`."""
    from scipy.optimize import minimize

    z = np.concatenate(steps)
    seg = np.concatenate([np.full(len(s), i) for i, s in enumerate(steps)])
    k = z.shape[1]
    theta = np.zeros(2 * k + 2)
    theta[k : 2 * k] = 1e-3  # a gate that starts uniform but not exactly flat
    res = minimize(gated_loss, theta, args=(z, seg, y, l2), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    t = res.x
    return t[:k], float(t[2 * k + 1]), t[k : 2 * k], float(t[2 * k])


def logits(reward: LayerReward, problems: Sequence[Sequence[Solution]], available: Sequence[int]) -> list[list[float]]:
    rows = layer_index(available, reward.layers)
    return [[reward.logit(solution_vectors(reward.kind, s.features, rows)) for s in p] for p in problems]


def _folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [order[i::k] for i in range(k)]


def out_of_fold(
    reader: Reader, problems: Sequence[Sequence[Solution]], available: Sequence[int], k: int, seed: int
) -> list[list[float]]:
    """Each problem's logits from the reader fitted on the other folds."""
    out: list[list[float]] = [[] for _ in problems]
    for held in _folds(len(problems), k, seed):
        held_set = set(held.tolist())
        fitted = fit_reader(reader, [p for i, p in enumerate(problems) if i not in held_set], available)
        for i, scores in zip(held, logits(fitted, [problems[i] for i in held], available), strict=True):
            out[i] = scores
    return out


def combine_with_votes(
    fit_logits: Sequence[Sequence[float]],
    fit_problems: Sequence[Sequence[Solution]],
    eval_logits: Sequence[Sequence[float]],
    eval_problems: Sequence[Sequence[Solution]],
) -> list[list[float]]:
    """A two-input logistic regression (the reward's logit, the vote share) fitted on honest
    (out-of-fold) logits, applied to other problems."""
    from sklearn.linear_model import LogisticRegression

    def table(ls: Sequence[Sequence[float]], ps: Sequence[Sequence[Solution]]) -> np.ndarray:
        return np.array([[x, s.vote_share] for xs, p in zip(ls, ps, strict=True) for x, s in zip(xs, p, strict=True)])

    y = [s.correct for p in fit_problems for s in p]
    model = LogisticRegression().fit(table(fit_logits, fit_problems), y)
    flat = model.decision_function(table(eval_logits, eval_problems))
    out, at = [], 0
    for p in eval_problems:
        out.append(flat[at : at + len(p)].tolist())
        at += len(p)
    return out


def readers(
    layers: Sequence[int], l2s: Sequence[float] = (1.0, 30.0, 300.0), kinds: Sequence[str] = SOLUTION_KINDS
) -> list[Reader]:
    """The grid: every reader on each layer alone and on all of them side by side; the token
    probes also fitted within problems (`Reader.within`). The L2 strengths reach 300 because
    on the first 102 problems the strongest then tried (30) won everywhere: the edge of the grid."""
    sets = [(layer,) for layer in layers] + ([tuple(layers)] if len(layers) > 1 else [])
    grid = [Reader(kind, chosen, l2) for kind in kinds for chosen in sets for l2 in l2s]
    token_probes = [k for k in kinds if k in ("final", "answer", "judge")]
    return grid + [Reader(k, chosen, l2, within=True) for k in token_probes for chosen in sets for l2 in l2s]


def train_reward(
    out_dir: Path,
    model_sha256: str,
    val_fraction: float = 0.2,
    folds: int = 4,
    seed: int = 0,
    grid: Sequence[Reader] | None = None,
    progress: bool = True,
    judge: str | None = None,
) -> tuple[LayerReward, dict[str, Any]]:
    """Choose, judge and refit the reward (module docstring); returns it and the report.
    judge: train the judge probe on that model's judgements (`load_problems`)."""
    problems, available, kinds = load_problems(out_dir, judge)
    if grid is not None and (unserved := sorted({r.kind for r in grid} - set(kinds))):
        raise TrainRewardError(f"readers {unserved} need the full states: run collect-layers --rebuild")
    order = np.random.default_rng(seed).permutation(len(problems))
    n_val = max(1, int(len(problems) * val_fraction))
    val = [problems[i] for i in sorted(order[:n_val])]
    fit = [problems[i] for i in sorted(order[n_val:])]
    tried = []
    best: tuple[float, Reader, list[list[float]]] | None = None
    for reader in grid if grid is not None else readers(available, kinds=kinds):
        oof = out_of_fold(reader, fit, available, folds, seed)
        score, _ = within_auroc(oof, fit)
        tried.append({"reader": reader.label, "cv_auroc_within_problem": round(score, 4)})
        if progress:
            print(f"  {reader.label}: cv within-problem AUROC {score:.3f}", flush=True)
        if best is None or score > best[0]:
            best = (score, reader, oof)
    assert best is not None
    cv_score, chosen, oof = best
    held = fit_reader(chosen, fit, available, model_sha256)
    val_logits = logits(held, val, available)
    combined = combine_with_votes(oof, fit, val_logits, val)

    def judged(scores: Sequence[Sequence[float]]) -> dict[str, Any]:
        mean, each = within_auroc(scores, val)
        lo, hi = problem_ci(np.array(each), seed) if each else (float("nan"), float("nan"))
        pooled = auroc([x for s in scores for x in s], [x.correct for p in val for x in p])
        return {"auroc_within_problem": round(mean, 4), "ci": [round(lo, 4), round(hi, 4)], "auroc": round(pooled, 4)}

    votes = [[s.vote_share for s in p] for p in val]
    # a judge probe is also judged against the judge's own answer, read in the same pass
    judge_rows = {"judge_p_yes": judged([[s.p_yes or 0.0 for s in p] for p in val])} if judge else {}
    report = {
        "collection": str(out_dir),
        "problems": len(problems),
        "fit_problems": len(fit),
        "val_problems": len(val),
        "val_problems_with_both": len(within_auroc(votes, val)[1]),
        "solutions": sum(map(len, problems)),
        "correct_share": round(float(np.mean([s.correct for p in problems for s in p])), 4),
        "layers": available,
        "readers_served": list(kinds),  # the answer reader alone when only answers/ was here
        "judge": judge,
        "seed": seed,
        "folds": folds,
        "chosen": chosen.label,
        "cv_auroc_within_problem": round(cv_score, 4),
        "validation": {
            "reward": judged(val_logits),
            "vote_share": judged(votes),
            "reward+vote_share": judged(combined),
            **judge_rows,
        },
        "tried": tried,
    }
    final = fit_reader(chosen, problems, available, model_sha256)
    final.meta = {k: v for k, v in report.items() if k != "tried"}
    return final, report


def report_markdown(report: dict[str, Any]) -> str:
    v = report["validation"]
    lines = [
        f"Chosen by {report['folds']}-fold cross-validation over {report['fit_problems']} training problems: "
        f"**{report['chosen']}** (cv within-problem AUROC {report['cv_auroc_within_problem']:.3f}).",
        "",
        f"Held-out validation: {report['val_problems']} problems ({report['val_problems_with_both']} with both right "
        "and wrong samples), 8 samples each, never used to fit or choose.",
        "",
        "| verifier | AUROC within a problem [95% CI] | AUROC (all solutions) |",
        "|---|---:|---:|",
    ]
    for name, r in v.items():
        lo, hi = r["ci"]
        lines.append(f"| {name} | {r['auroc_within_problem']:.3f} [{lo:.3f}, {hi:.3f}] | {r['auroc']:.3f} |")
    lines += ["", "Every reader tried (cv within-problem AUROC on the training problems):", ""]
    lines += ["| reader | cv AUROC |", "|---|---:|"]
    lines += [f"| {t['reader']} | {t['cv_auroc_within_problem']:.3f} |" for t in report["tried"]]
    return "\n".join(lines) + "\n"
