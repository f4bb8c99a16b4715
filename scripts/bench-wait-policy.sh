#!/usr/bin/env bash
# The engine alone at 2 fixed threads, OpenMP's waiting threads spinning (the default) against
# sleeping (OMP_WAIT_POLICY=PASSIVE), alternating, one fresh process each (the policy is read
# when the library loads). BENCHMARKS.md, "Sharing the machine". Usage: scripts/bench-wait-policy.sh [ROUNDS]
set -euo pipefail
one='
import time
from ttscale.engines.llamacpp import LlamaCppGenerator
from ttscale.engines.models import DEFAULT_MODEL, recommended_sampling
from ttscale.tasks.datasets import load_dataset
from ttscale.tasks.prompts import problem_prompt
prompt = problem_prompt(load_dataset("math500").problems[0].question)
params = recommended_sampling(DEFAULT_MODEL, max_tokens=128, seed=0)
gen = LlamaCppGenerator(DEFAULT_MODEL, n_threads=2, n_ctx=4096, n_seq_max=16)
gen.generate([prompt], 1, params)  # warm the prompt cache
t0 = time.perf_counter()
out = gen.generate([prompt], 16, params)
print(round(out.compute.generated_tokens / (time.perf_counter() - t0), 1))
'
for _ in $(seq "${1:-2}"); do
  echo "spinning $(env -u OMP_WAIT_POLICY python -c "$one" 2>/dev/null) tok/s"
  echo "PASSIVE  $(OMP_WAIT_POLICY=PASSIVE python -c "$one" 2>/dev/null) tok/s"
done
