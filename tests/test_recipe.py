import json
import shlex
from pathlib import Path

import pytest

from ttscale.apps.recipe import RecipeError, load_recipe, plan
from ttscale.cli import build_parser

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "reference-gpu.json"


def test_reference_recipe_parses_resolves_and_plans():
    recipe = load_recipe(RECIPE)
    p = plan(recipe)
    assert p.problems == 500
    assert len(p.commands) == len(recipe["runs"]) * recipe["shards"]
    parser = build_parser()
    for cmd in p.commands:
        argv = shlex.split(cmd)
        assert argv[0] == "ttscale"
        args = parser.parse_args(argv[1:])  # every flag the plan writes exists
        assert args.server == "http://localhost:8000" and args.scorer == "prm:rlhflow-8b"
        assert args.shard is not None and args.output.parts[0] == "runs"
    budgets = {tuple(parser.parse_args(shlex.split(c)[1:]).n) for c in p.commands}
    assert (4, 16, 64, 256) in budgets and (256,) in budgets
    assert p.generation_requests > 500


@pytest.mark.parametrize(
    "change, message",
    [
        ({"scorer": "prm:gpt-judge"}, "unknown scorer"),
        ({"runs": [{"name": "x", "strategies": ["mcts"], "n": [4]}]}, "unknown strategy"),
        ({"dataset": "no-such-set"}, "neither a built-in"),
        ({"aggregate": "median"}, "unknown aggregation"),
    ],
)
def test_bad_recipes_are_refused_with_the_name_that_does_not_resolve(tmp_path, change, message):
    recipe = json.loads(RECIPE.read_text())
    recipe.update(change)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(recipe))
    with pytest.raises((RecipeError, FileNotFoundError), match=message):
        load_recipe(path)


def test_cli_dry_run(capsys):
    from ttscale.cli import main

    assert main(["recipe", str(RECIPE), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "vllm serve meta-llama/Llama-3.2-1B-Instruct" in out and "generation requests" in out


def test_the_vllm_cpu_recipe_plans_the_equivalence_run_against_the_local_server():
    recipe = load_recipe(RECIPE.parent / "vllm-cpu.json")
    p = plan(recipe)
    assert p.problems == 20
    (cmd,) = p.commands
    args = build_parser().parse_args(shlex.split(cmd)[1:])
    assert (args.server, args.server_model, args.n, args.limit) == ("http://127.0.0.1:8000", "qwen-0.5b", (8,), 20)
    assert args.model_params == 630167424  # charged the default model's FLOPs per token
    assert "vllm.entrypoints.openai.api_server" in recipe["servers"]["policy"]["command"]
