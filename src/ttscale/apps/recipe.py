"""Recipes: a whole experiment in one JSON file (servers, model, verifier, data, strategies,
budgets, shards), validated before anything runs, and planned as the `ttscale eval` commands
that reproduce it. `ttscale recipe FILE --dry-run` prints the plan and an upper bound on the
requests it will send; without --dry-run it runs one shard's evals against the servers.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import AGGREGATIONS
from ..engines.openai import TEMPLATES
from ..strategies.catalogue import CATALOGUE, PER_BUDGET_STRATEGIES, POOL_STRATEGIES
from ..tasks.datasets import load_dataset
from ..verifiers.registry import known_scorer


class RecipeError(ValueError):
    pass


@dataclass
class Plan:
    commands: list[str]  # one eval command per run and shard
    problems: int
    generation_requests: int  # upper bound
    notes: str


def load_recipe(path: str | Path) -> dict[str, Any]:
    try:
        recipe = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RecipeError(f"cannot read recipe {path}: {e}") from None
    validate(recipe)
    return recipe


def validate(recipe: dict[str, Any]) -> None:
    """Every name must resolve: strategies, verifier, aggregation, dataset, chat template."""
    for key in ("servers", "scorer", "dataset", "runs", "sampling"):
        if key not in recipe:
            raise RecipeError(f"recipe has no {key!r}")
    policy = recipe["servers"].get("policy")
    if not policy or not policy.get("urls") or not policy.get("model"):
        raise RecipeError("servers.policy needs urls and model")
    if policy.get("chat_template", "chatml") not in TEMPLATES and not Path(policy["chat_template"]).is_file():
        raise RecipeError(f"unknown chat template {policy['chat_template']!r}")
    if not known_scorer(recipe["scorer"]):
        raise RecipeError(f"unknown scorer {recipe['scorer']!r}")
    if recipe.get("aggregate", "mean") not in AGGREGATIONS:
        raise RecipeError(f"unknown aggregation {recipe['aggregate']!r}")
    load_dataset(recipe["dataset"])  # raises on an unknown dataset
    for run in recipe["runs"]:
        for s in run["strategies"]:
            if s not in CATALOGUE:
                raise RecipeError(f"run {run.get('name')!r}: unknown strategy {s!r}")
        if not run.get("n") or min(run["n"]) < 1:
            raise RecipeError(f"run {run.get('name')!r}: budgets must be positive")
    if int(recipe.get("shards", 1)) < 1:
        raise RecipeError("shards must be at least 1")


def eval_args(recipe: dict[str, Any], run: dict[str, Any], shard: int | None) -> list[str]:
    policy = recipe["servers"]["policy"]
    s = recipe["sampling"]
    flags = {
        "--dataset": recipe["dataset"],
        "--n": ",".join(map(str, run["n"])),
        "--strategy": ",".join(run["strategies"]),
        "--scorer": recipe["scorer"],
        "--aggregate": recipe.get("aggregate", "mean"),
        "--seed": recipe.get("seed", 0),
        "--server": ",".join(policy["urls"]),
        "--server-model": policy["model"],
        "--model": policy["model"],
        "--chat-template": policy.get("chat_template", "chatml"),
        "--model-params": policy.get("params", 0),
        "--temperature": s["temperature"],
        "--top-p": s.get("top_p", 1.0),
        "--top-k": s.get("top_k", 0),
        "--max-tokens": s["max_tokens"],
    }
    args = ["eval", *(x for flag, value in flags.items() for x in (flag, str(value)))]
    for key, value in recipe.get("search", {}).items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    if recipe.get("limit"):
        args += ["--limit", str(recipe["limit"])]
    shards = int(recipe.get("shards", 1))
    out = f"{recipe.get('output', 'runs/recipe')}/{run['name']}"
    if shard is not None and shards > 1:
        args += ["--shard", f"{shard}/{shards}"]
        out += f"/shard{shard}"
    return [*args, "--output", out]


def plan(recipe: dict[str, Any]) -> Plan:
    validate(recipe)
    shards = int(recipe.get("shards", 1))
    n_problems = len(load_dataset(recipe["dataset"]).problems[: recipe.get("limit") or None])
    max_iter = int(recipe.get("search", {}).get("max_iterations", 20))
    commands = []
    requests = 0
    for run in recipe["runs"]:
        for shard in range(shards):
            commands.append("ttscale " + shlex.join(eval_args(recipe, run, shard)))
        if any(s in POOL_STRATEGIES for s in run["strategies"]):
            requests += n_problems  # one request with n samples per problem
        for s in run["strategies"]:
            if s in PER_BUDGET_STRATEGIES:
                # at most one request per live node per iteration, at most n live nodes
                requests += n_problems * sum(max_iter * n for n in run["n"])
    return Plan(commands, n_problems, requests, recipe.get("notes", ""))
