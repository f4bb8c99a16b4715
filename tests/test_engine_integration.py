"""The real default model through llama.cpp: short generations, real batching and caching."""

import json
import subprocess
import sys

import numpy as np
import pytest

from ttscale.core import Candidate, Problem, SamplingParams, Step
from ttscale.sandbox import isolation_available
from ttscale.strategies.spec import RunSpec
from ttscale.tasks.prompts import problem_prompt
from ttscale.tasks.steps import split_steps
from ttscale.verifiers.model_free import LogProbScorer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine():
    from ttscale.engines.llamacpp import LlamaCppGenerator

    gen = LlamaCppGenerator(n_ctx=4096, n_seq_max=8)
    yield gen
    gen.close()


QUESTION = "Tom has 3 red balls and 4 blue balls. How many balls does he have?"


def test_n_samples_share_one_prompt_computation(engine):
    prompt = problem_prompt(QUESTION + " (first)")
    n_prompt = len(engine.tokenize(engine.render(prompt)))
    gen = engine.generate([prompt], 4, SamplingParams(max_tokens=12, seed=1))
    (row,) = gen.completions
    assert len(row) == 4
    # the prompt is computed once (up to what an earlier call left in the cache), not 4 times
    assert gen.compute.prompt_tokens + gen.compute.cached_prompt_tokens == n_prompt
    assert gen.compute.generated_tokens == sum(c.n_tokens for c in row)
    for c in row:
        assert 1 <= c.n_tokens <= 12
        assert len(c.logprobs) == len(c.certainties) == len(c.token_offsets) == c.n_tokens
        assert all(lp <= 1e-4 for lp in c.logprobs)
        assert c.finish_reason in ("length", "eos")
    assert gen.compute.flops == pytest.approx(
        2 * engine.n_params * (gen.compute.prompt_tokens + gen.compute.generated_tokens)
    )


def test_a_server_is_charged_the_embedded_engines_flops_per_token(engine):
    from ttscale.engines.models import DEFAULT_MODEL, REGISTRY

    # the registry's count is what --server runs of a registered --model are charged with
    assert REGISTRY[DEFAULT_MODEL].params == engine.n_params


def test_a_replay_recomputes_a_samples_token_statistics(engine):
    """A pool stored before DeepConf's token confidences were kept gets them back by replay:
    one prefill gives each token's log-probability and self-certainty as sampling did (the
    end-of-turn token's too, when the sample ended by itself)."""
    from ttscale.tasks.confidence import trace_confidence

    prompt = problem_prompt(QUESTION + " (replayed)")
    (row,) = engine.generate([prompt], 2, SamplingParams(max_tokens=200, seed=3)).completions
    assert "eos" in {c.finish_reason for c in row}  # the end-of-turn token is predicted too
    for c in row:
        replayed, spent = engine.replay(prompt, c.text, c.finish_reason, certainties=True)
        assert spent.prompt_tokens >= len(replayed.token_ids) > 0
        if len(replayed.certainties) != len(c.certainties):  # the text tokenized otherwise than sampled
            continue
        # a prefill batches the tokens that sampling fed one by one: quantized sums differ slightly
        assert replayed.certainties == pytest.approx(c.certainties, rel=0.02)
        assert replayed.logprobs == pytest.approx(c.logprobs, abs=0.2)
        live, again = trace_confidence(c.certainties), trace_confidence(replayed.certainties)
        assert again == pytest.approx(live, rel=0.02)
    assert any(
        len(engine.replay(prompt, c.text, c.finish_reason, certainties=True)[0].certainties) == c.n_tokens for c in row
    )


def test_same_seed_same_samples_and_samples_differ(engine):
    prompt = problem_prompt("Name a random animal and describe it.")
    params = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, max_tokens=10, seed=7)
    engine.reset()
    a = engine.generate([prompt], 4, params).completions[0]
    engine.generate([problem_prompt("Something else entirely.")], 3, params)
    engine.reset()
    b = engine.generate([prompt], 4, params).completions[0]
    assert [c.text for c in a] == [c.text for c in b]
    assert len({c.text for c in a}) > 1


def test_repeated_prompt_is_served_from_cache(engine):
    prompt = problem_prompt(QUESTION + " (cache)")
    n_prompt = len(engine.tokenize(engine.render(prompt)))
    engine.generate([prompt], 2, SamplingParams(max_tokens=4))
    again = engine.generate([prompt], 2, SamplingParams(max_tokens=4))
    assert again.compute.prompt_tokens == 1  # the last prompt token is recomputed for its logits
    assert again.compute.cached_prompt_tokens == n_prompt - 1


def test_continuation_with_step_stop_string(engine):
    base = problem_prompt(QUESTION)
    engine.generate([base], 1, SamplingParams(max_tokens=4))
    partial = base.extended("Tom has 3 red balls.\n\nHe also has")
    gen = engine.generate([partial], 3, SamplingParams(max_tokens=40, stop=("\n\n",), seed=2))
    assert gen.compute.cached_prompt_tokens >= len(engine.tokenize(engine.render(base))) - 1
    for c in gen.completions[0]:
        assert "\n\n" not in c.text
        assert c.finish_reason in ("stop", "eos", "length")
    assert any(c.finish_reason == "stop" for c in gen.completions[0])


def test_several_prompts_in_one_batch(engine):
    prompts = [problem_prompt("What is 2 + 2?"), problem_prompt("What is 10 - 3?")]
    gen = engine.generate(prompts, 2, SamplingParams(max_tokens=8, seed=3))
    assert [len(r) for r in gen.completions] == [2, 2]
    greedy = engine.generate(prompts, 1, SamplingParams(temperature=0, max_tokens=8))
    again = engine.generate(prompts, 1, SamplingParams(temperature=0, max_tokens=8, seed=99))
    assert [r[0].text for r in greedy.completions] == [r[0].text for r in again.completions]


def test_identical_prompts_in_one_call_are_computed_once(engine):
    # particle filtering and DVTS expand one root node once per particle / subtree
    prompt = problem_prompt("Name a colour and a number.")
    n_prompt = len(engine.tokenize(engine.render(prompt)))
    params = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, max_tokens=8, seed=4)
    engine.reset()
    gen = engine.generate([prompt] * 3, 2, params)
    assert [len(r) for r in gen.completions] == [2, 2, 2]
    assert gen.compute.prompt_tokens == n_prompt
    assert gen.compute.cached_prompt_tokens == 0
    texts = [c.text for r in gen.completions for c in r]
    assert len(set(texts)) > 1  # each (prompt, sample) keeps its own seed
    engine.reset()
    again = engine.generate([prompt] * 3, 2, params)
    assert [c.text for r in again.completions for c in r] == texts


def test_strategy_end_to_end_on_the_real_model(engine):
    from ttscale.strategies import weighted_best_of_n

    r = weighted_best_of_n(
        Problem("t", "What is 2 + 3?", gold="5"),
        engine,
        LogProbScorer(),
        2,
        spec=RunSpec(SamplingParams(max_tokens=48, seed=0)),
    )
    assert len(r.candidates) == 2
    assert all(0 < s <= 1 for c in r.candidates for s in c.step_scores)
    assert all(c.confidence["lowest_group"] <= c.confidence["mean"] for c in r.candidates)  # DeepConf's, for free
    assert r.compute.generated_tokens == sum(c.n_tokens for c in r.candidates)


def test_cli_solve_runs_the_real_model():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ttscale",
            "solve",
            "What is 2 + 3?",
            "--n",
            "2",
            "--max-tokens",
            "40",
            "--strategy",
            "majority",
            "--threads",
            "1",
            "--show",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "answer:" in out.stdout and "generated tokens" in out.stdout
    assert out.stdout.count("answer=") == 2


def test_more_samples_than_fit_at_once_are_split_not_refused(engine):
    prompt = problem_prompt("Write one short sentence about the sea.")
    # 10 sequences > n_seq_max=8, and 1500 worst-case tokens each > what 4096 cells hold at once
    gen = engine.generate([prompt], 10, SamplingParams(max_tokens=1500, stop=("\n",), seed=5, temperature=1.0))
    (row,) = gen.completions
    assert len(row) == 10
    # each ran to its own end: a stop, the end of text, or (at temperature 1, where the kernels
    # of another CPU can draw a sample that never writes a newline) its whole token budget
    assert all(c.finish_reason in ("stop", "eos") or (c.finish_reason == "length" and c.n_tokens == 1500) for c in row)
    assert sum(c.finish_reason in ("stop", "eos") for c in row) >= 5
    assert len({c.text for c in row}) > 1
    assert gen.compute.generated_tokens == sum(c.n_tokens for c in row)


def test_next_token_logprobs_reuse_the_cache(engine):
    from ttscale.verifiers.judge import judge_prompt

    a = judge_prompt("What is 2 + 2?", ["2 + 2 = 4."])
    b = judge_prompt("What is 2 + 2?", ["2 + 2 = 4.", "So the answer is 5."])
    (lp_a,), first = engine.next_token_logprobs([a], ["Yes", "No"])
    (lp_b,), second = engine.next_token_logprobs([b], ["Yes", "No"])
    assert all(x < 0 for x in lp_a + lp_b)
    assert second.cached_prompt_tokens > 0 and second.prompt_tokens < first.prompt_tokens
    with pytest.raises(Exception, match="not one"):
        engine.next_token_logprobs([a], ["Yes indeed, certainly"])


def test_beam_search_on_the_real_model(engine):
    from ttscale.strategies.search import beam_search
    from ttscale.verifiers.judge import LLMJudgeScorer

    problem = Problem("easy", QUESTION, gold="7")
    # 16-token steps: every step is cut short, so the search has to continue partial answers
    r = beam_search(
        problem,
        engine,
        LLMJudgeScorer(engine),
        4,
        beam_width=2,
        max_iterations=3,
        spec=RunSpec(SamplingParams(max_tokens=120, seed=0), step_tokens=16),
    )
    assert 1 <= len(r.candidates) <= 4
    assert all(0 <= s <= 1 for c in r.candidates for s in c.step_scores)
    assert r.compute.generated_tokens > 0 and r.compute.verifier_tokens > 0
    # children continue their parents from the KV cache: most prompt tokens are served from it
    assert r.compute.cached_prompt_tokens > r.compute.prompt_tokens
    assert r.trace and r.trace[0]["parent"] is None


def test_hidden_states_at_every_step_end():
    from ttscale.engines.llamacpp import LlamaCppGenerator

    gen = LlamaCppGenerator(n_ctx=2048, n_seq_max=4, hidden_states=True)
    try:
        prompt = problem_prompt(QUESTION)
        out = gen.generate([prompt], 2, SamplingParams(max_tokens=80, seed=4)).completions[0]
        for c in out:
            # one hidden state per blank-line step end, plus one where the text stops
            assert len(c.hidden) == c.text.count("\n\n") + 1
            assert all(vec.shape == (gen.n_embd,) and abs(vec).sum() > 0 for _, vec in c.hidden)
            idx = [i for i, _ in c.hidden]
            assert idx == sorted(idx) and idx[0] >= -1 and idx[-1] <= c.n_tokens - 1
        stepped = gen.generate([prompt], 2, SamplingParams(max_tokens=80, seed=4, stop=("\n\n",)))
        assert all(len(c.hidden) == 1 for c in stepped.completions[0])
    finally:
        gen.close()


@pytest.fixture(scope="module")
def states_engine():
    from ttscale.engines.llamacpp import LlamaCppGenerator

    gen = LlamaCppGenerator(n_ctx=4096, n_seq_max=8, hidden_states=True)
    yield gen
    gen.close()


def test_probe_pipeline_on_the_real_model(tmp_path, states_engine):
    """Collect hidden states for two training problems, fit, and score with the probe."""
    from pathlib import Path

    from ttscale.apps.train_probe import collect, read_records, train
    from ttscale.strategies import weighted_best_of_n
    from ttscale.tasks.datasets import load_dataset
    from ttscale.verifiers.probe import Probe, ProbeScorer

    train_file = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k_train.jsonl"
    if not train_file.exists():
        pytest.skip("../shared/data is not present")
    gen = states_engine
    problems = load_dataset(str(train_file)).problems[:2]
    out = tmp_path / "probe.jsonl"
    params = SamplingParams(max_tokens=64, seed=0)
    assert collect(problems, gen, 2, params, out, progress=False) == 2
    assert collect(problems, gen, 2, params, out, progress=False) == 0  # resumed: nothing twice
    records = read_records(out)
    assert [len(r["solutions"]) for r in records] == [2, 2]
    assert [r["sampling"]["max_tokens"] for r in records] == [64, 64]  # what was sampled stays known
    assert all(h is not None for r in records for s in r["solutions"] for h in s["hidden"])
    probe = train(records, gen.spec.sha256)
    probe.save(tmp_path / "p.npz")
    scorer = ProbeScorer.for_generator(gen, str(tmp_path / "p.npz"))
    assert scorer.name.startswith("probe@")  # not the shipped probe: its scores are stored apart
    params = SamplingParams(max_tokens=48, seed=1)
    r = weighted_best_of_n(Problem("t", QUESTION, gold="7"), gen, scorer, 2, spec=RunSpec(params))
    assert all(len(c.step_scores) == len(c.steps) and all(0 < x < 1 for x in c.step_scores) for c in r.candidates)
    with pytest.raises(Exception, match="trained for the model"):
        Probe.load(tmp_path / "p.npz", "0" * 64)


def test_the_shipped_probe_scores_live_and_replayed_solutions(states_engine):
    from ttscale.apps.bench import bench_probe
    from ttscale.strategies import weighted_best_of_n
    from ttscale.strategies.search import beam_search
    from ttscale.verifiers.probe import ProbeScorer

    gen = states_engine
    shipped = ProbeScorer.for_generator(gen)  # the probe that ships in the package, for this model
    assert shipped.probe.meta["problems"] >= 50 and shipped.probe.meta["val_auroc_last_step"] > 0.5
    problem = Problem("t", QUESTION, gold="7")
    r = weighted_best_of_n(problem, gen, shipped, 2, spec=RunSpec(SamplingParams(max_tokens=48, seed=1)))
    assert all(len(c.step_scores) == len(c.steps) and all(0 < x < 1 for x in c.step_scores) for c in r.candidates)
    # A search guided by the probe: its steps carry hidden states, its result is still JSON.
    tree = beam_search(
        problem, gen, shipped, 2, beam_width=2, max_iterations=2, spec=RunSpec(SamplingParams(max_tokens=32))
    )
    assert json.loads(json.dumps(tree.to_dict()))["candidates"][0]["steps"][0]["text"]
    # A stored solution (no hidden states) is replayed in one prefill: same steps, nearly
    # the same states as live sampling, and the prefill is charged as verifier tokens.
    live = r.candidates[0]
    stored = Candidate(
        text=live.text,
        steps=[Step(**s.to_dict()) for s in live.steps],
        answer=live.answer,
        finish_reason=live.finish_reason,
    )
    replayed, spent = shipped.score(problem, [stored])
    assert len(replayed[0]) == len(live.steps) and spent.verifier_tokens >= live.n_tokens
    assert replayed[0] == pytest.approx(live.step_scores, abs=0.1)
    completion, _ = gen.replay(problem_prompt(QUESTION), live.text, live.finish_reason)
    for a, b in zip(split_steps(completion), live.steps, strict=True):
        cos = float(np.dot(a.hidden, b.hidden) / np.linalg.norm(a.hidden) / np.linalg.norm(b.hidden))
        assert a.text == b.text and cos > 0.98
    cost = bench_probe(problems=1, n=2, max_tokens=24)
    assert cost["scored_steps"] > 0 and cost["probe_ms_per_step"] > 0 and cost["replay_tok_per_s"] > 0
    assert min(cost["sampling_tok_per_s"].values()) > 0


def test_self_refine_on_the_real_model(engine):
    from ttscale.strategies.refine import first_rounds, self_refine

    r = self_refine(
        Problem("r", "What is 2 + 3?", gold="5"),
        engine,
        LogProbScorer(),
        2,
        spec=RunSpec(SamplingParams(max_tokens=48, seed=0)),
    )
    assert len(r.candidates) == 2
    # the second round's prompt holds the first round: most of it comes from the cache
    assert r.compute.cached_prompt_tokens > 0
    assert set(r.outcome["picks"]) >= {"last", "majority", "best_of_n", "weighted_best_of_n"}
    # the eval reads smaller budgets off the first rounds of one run: that must be exact here
    one = self_refine(
        Problem("r", "What is 2 + 3?", gold="5"),
        engine,
        LogProbScorer(),
        1,
        spec=RunSpec(SamplingParams(max_tokens=48, seed=0)),
    )
    cut = first_rounds(r, 1)
    assert cut.candidates[0].text == one.candidates[0].text
    assert cut.compute.generated_tokens == one.compute.generated_tokens


def test_a_stored_run_reproduces_token_for_token_in_a_fresh_engine(tmp_path, engine):
    # what `ttscale bench reproduce` checks on committed runs: a record's seed and settings give
    # back its samples, though the engine that re-runs it starts with another cache and order
    from ttscale.apps.bench import bench_reproduce
    from ttscale.evaluation import EvalConfig, run_eval

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": QUESTION, "answer": "7"}) + "\n")
    cfg = EvalConfig(
        dataset=str(data),
        ns=(2,),
        strategies=("majority", "dvts"),
        sampling=SamplingParams(temperature=0.7, top_p=0.8, top_k=20, max_tokens=40),
        search={"beam_width": 2, "max_iterations": 2, "step_tokens": 16},
    )
    run_eval(cfg, lambda: engine, tmp_path / "run", progress=False, n_boot=5)
    r = bench_reproduce(tmp_path / "run", records=2)
    assert [row["key"].split("|")[0] for row in r["records"]] == ["pool", "search"]
    assert r["reproduced_exactly"] == 2, r["records"]


CODE_TASK = '''def double(x: int) -> int:
    """Return twice x.
    >>> double(2)
    4
    """
'''


@pytest.mark.skipif(not isolation_available(), reason="the sandbox needs root")
def test_code_tasks_on_the_real_model(engine):
    """A pool with the model's own tests and a self-debugging run: real programs, really run."""
    from ttscale.strategies.catalogue import run_strategy
    from ttscale.tasks.code import CODE_SYSTEM_PROMPT, code_problem
    from ttscale.tasks.code_domain import CodeDomain
    from ttscale.tasks.domain import domain_of
    from ttscale.verifiers.registry import make_scorer

    problem = code_problem(CODE_TASK, pid="double", tests="def check(candidate):\n    assert candidate(3) == 6\n")
    spec = RunSpec(SamplingParams(max_tokens=64, seed=0), system=CODE_SYSTEM_PROMPT)
    pool = run_strategy("weighted_best_of_n", problem, engine, make_scorer("tests", engine), 2, spec)
    domain = domain_of(problem)
    assert isinstance(domain, CodeDomain) and domain.tests is not None and pool.compute.test_tokens > 0
    assert pool.answer is not None and "def double" in pool.answer and pool.compute.executed_tests > 0
    assert domain.is_correct(pool.answer, problem.gold)  # a 0.5B model doubles a number
    debug = run_strategy("self_debug", problem, engine, make_scorer("examples"), 2, spec)
    assert debug.answer is not None and debug.outcome["rounds"] and debug.compute.executed_tests >= 1


def test_the_engine_stops_a_sample_below_its_confidence_floor(engine):
    from ttscale.core import Prompt

    prompt = Prompt((("user", "Write a long story about a lighthouse keeper."),))  # longer than one window
    free = engine.generate([prompt], 2, SamplingParams(max_tokens=48, seed=3)).completions[0]
    floor = max(c.certainties[0] for c in free) * 100  # above anything a window can reach
    watched = engine.generate([prompt], 2, SamplingParams(max_tokens=48, seed=3, confidence_floor=floor))
    for c in watched.completions[0]:
        assert c.finish_reason == "low_confidence" and c.n_tokens == 32  # the first full window
    assert watched.compute.generated_tokens == 64


def test_the_thread_count_does_not_change_the_samples(engine):
    """What lets `--threads auto` change the count mid-run: the same seed gives the same
    tokens at 1 and at 2 threads (llama.cpp splits rows across threads, not sums)."""
    import llama_cpp

    prompt = [problem_prompt(QUESTION)]
    params = SamplingParams(max_tokens=64, seed=11)
    runs = []
    for threads in (2, 1):
        llama_cpp.llama_set_n_threads(engine._ctx, threads, threads)
        engine.reset()
        runs.append([c.token_ids for c in engine.generate(prompt, 4, params).completions[0]])
    llama_cpp.llama_set_n_threads(engine._ctx, engine._threads, engine._threads)
    assert runs[0] == runs[1]
