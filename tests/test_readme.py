"""The README's promises that can be checked without running the model."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    blocks = re.findall(r"```bash\n(.*?)\n\s*```", (ROOT / "README.md").read_text(), re.S)
    return [b.strip() for b in blocks]


def test_ci_runs_exactly_the_readme_test_command():
    test_cmd = next(c for c in readme_commands() if "pytest" in c)
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_cmd in ci_lines


def test_ci_runs_exactly_the_readme_vllm_stage():
    vllm_cmd = next(c for c in readme_commands() if "vllm-cpu-env.sh" in c)
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert vllm_cmd in ci_lines


def test_readme_main_job_uses_flags_the_cli_accepts():
    from ttscale.cli import build_parser

    main_job = next(c for c in readme_commands() if "pip install . &&" in c)
    argv = main_job.split("&&")[1].split()[1:]
    args = build_parser().parse_args(argv)
    assert (args.command, args.dataset, args.limit, args.n) == ("eval", "gsm8k", 5, (8,))


def test_help_lists_every_strategy_and_scorer():
    from ttscale.strategies import STRATEGIES
    from ttscale.verifiers.registry import SCORERS

    for argv in (["--help"], ["eval", "--help"]):
        out = subprocess.run([sys.executable, "-m", "ttscale", *argv], capture_output=True, text=True).stdout
        for name in [*STRATEGIES, *SCORERS]:
            assert name in out


def test_importing_ttscale_pulls_no_heavy_engine():
    code = (
        "import sys, ttscale; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('llama_cpp', 'torch', 'transformers', 'vllm')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
