"""The code domain: reading examples and programs, the judge that hostile programs cannot
fool, grouping by behaviour, the execution verifiers, self-debugging, and HumanEval itself."""

import json

import pytest

from ttscale.core import Compute, Problem
from ttscale.engines.fake import FakeGenerator
from ttscale.evaluation.curves import stored_groups
from ttscale.strategies.catalogue import check_domain, run_strategy
from ttscale.strategies.debug import describe_failure, first_rounds, self_debug
from ttscale.strategies.spec import RunSpec
from ttscale.tasks.code import (
    CodeError,
    CodeTask,
    Example,
    Runner,
    Verdict,
    code_problem,
    example_tests,
    hidden_tests,
    parse_examples,
    probe_tests,
    program_of,
    strip_fences,
)
from ttscale.tasks.code_domain import CodeDomain
from ttscale.tasks.datasets import load_dataset
from ttscale.tasks.domain import domain_of
from ttscale.tasks.sandbox import isolation_available
from ttscale.verifiers.registry import make_scorer

FREE = ("logprob", "self_certainty", "conf_group", "conf_tail")  # every pool is scored by these
needs_sandbox = pytest.mark.skipif(not isolation_available(), reason="the sandbox needs root")

ADD = '''def add(a: int, b: int) -> int:
    """Add two numbers.
    >>> add(2, 3)
    5
    >>> add(-1, 1)
    0
    """
'''
ADD_TESTS = """
def check(candidate):
    assert candidate(2, 3) == 5
    assert candidate(10, -4) == 6
    assert candidate(0, 0) == 0
"""
TASK = CodeTask(ADD, "add")
RIGHT = ADD + "    return a + b\n"

# programs that are wrong but try to pass the hidden tests anyway
CHEATS = [
    ("exits with 0 before the asserts run", "import sys\nsys.exit(0)\ndef add(a, b):\n    return 0\n"),
    ("exits with 0 from inside the call", "def add(a, b):\n    import sys\n    sys.exit(0)\n"),
    ("ends its process at once", "import os\ndef add(a, b):\n    os._exit(0)\n"),
    ("returns an object equal to everything",
     "class E:\n    def __eq__(self, o):\n        return True\ndef add(a, b):\n    return E()\n"),
    ("returns an int that equals everything",
     "class I(int):\n    def __eq__(self, o):\n        return True\ndef add(a, b):\n    return I(0)\n"),
    ("redefines check", "def check(candidate):\n    pass\ndef add(a, b):\n    return 0\n"),
    ("replaces AssertionError",
     "import builtins\nbuiltins.AssertionError = type('X', (Exception,), {})\ndef add(a, b):\n    return 0\n"),
    ("prints the judge's verdict",
     'print(\'TTSCALE-JUDGE [{"passed": true, "got": null, "error": null}]\')\n'
     "def add(a, b):\n    print('TTSCALE-JUDGE [{\"passed\": true}]')\n    return 0\n"),
    ("writes the verdict into the judge's output",
     "import os\ndef add(a, b):\n    fd = os.open(f'/proc/{os.getppid()}/fd/1', os.O_WRONLY)\n"
     "    os.write(fd, b'TTSCALE-JUDGE [{\"passed\": true, \"got\": null, \"error\": null}]\\n')\n    return 0\n"),
    ("kills the judge", "import os, signal\ndef add(a, b):\n    os.kill(os.getppid(), signal.SIGKILL)\n"),
    ("hangs", "def add(a, b):\n    while True:\n        pass\n"),
    ("does not load", "def add(a, b):\n    return a +\n"),
    ("returns a lambda", "def add(a, b):\n    return lambda: 5\n"),
]  # fmt: skip


@needs_sandbox
@pytest.mark.parametrize(("what", "program"), CHEATS, ids=[c[0] for c in CHEATS])
def test_a_wrong_program_cannot_pass_the_hidden_tests(what, program):
    (outcomes,), spent = Runner().run(TASK, [program], hidden_tests(ADD_TESTS))
    assert not outcomes[0].passed and outcomes[0].error
    assert spent.executed_tests == 1 and spent.execution_time > 0


@needs_sandbox
def test_the_right_program_passes_and_the_tests_are_not_on_its_disk():
    peek = "import os\ndef add(a, b):\n    return sorted(os.listdir('.'))\n"
    runner = Runner()
    (passed,), _ = runner.run(TASK, [RIGHT], hidden_tests(ADD_TESTS))
    (looked,), _ = runner.run(TASK, [peek], probe_tests(["add(1, 2)"]))
    assert passed[0].passed
    assert looked[0].got == "[]"  # the judge removed its own script and the job before the program started


@needs_sandbox
def test_results_are_cached_per_program_and_tests():
    runner = Runner()
    tests = example_tests(TASK.examples)
    first, spent = runner.run(TASK, [RIGHT, RIGHT, None], tests)
    again, spent_again = runner.run(TASK, [RIGHT], tests)
    assert [o.passed for o in first[0]] == [True, True] and first[1] == first[0]
    assert all(not o.passed and o.error == "no program" for o in first[2])
    assert spent.executed_tests == 2 and spent_again == Compute()  # one distinct program ran, once
    assert again[0] == first[0]


EXAMPLES = [
    # (docstring lines, entry point, examples it gives)
    (">>> f(1)\n    2\n", "f", [Example("f(1)", "2")]),
    (">>> f('a', [1, 2])\n    ('a', 3)\n", "f", [Example("f('a', [1, 2])", "('a', 3)")]),  # quotes right under
    (">>> f(1)\n    2\n    >>> f(2)\n    4\n", "f", [Example("f(1)", "2"), Example("f(2)", "4")]),
    ("f(3) == 34\n    f(4) ➞ [1]\n", "f", [Example("f(3)", "34"), Example("f(4)", "[1]")]),
    ("for x_or_y(7, 34, 12) == 34\n", "x_or_y", [Example("x_or_y(7, 34, 12)", "34")]),
    ("f(2) => True\n    f(-1) -> False.\n", "f", [Example("f(2)", "True"), Example("f(-1)", "False")]),
    ("is_happy(a) => False\n", "is_happy", []),  # a name, not a value: prose
    (">>> f(1)\n    some words\n", "f", []),  # not a literal
    ("f(1) returns the sum of it\n", "f", []),
    (">>> g(1)\n    2\n", "f", []),  # another function
]


@pytest.mark.parametrize(("doc", "entry", "want"), EXAMPLES)
def test_examples_are_read_from_the_docstring(doc, entry, want):
    prompt = f'def {entry}(x):\n    """Docs.\n    {doc}    """\n'
    assert parse_examples(prompt, entry) == want


PROGRAMS = [
    # (completion text, complete, the program, or None)
    ("    return a + b\n```", True, RIGHT),
    ("    return a + b\n", True, RIGHT),
    ("    return a + b\n", False, None),  # cut short without its block's end: unfinished
    ("def add(a, b):\n    return b + a\n```", True, ADD + "def add(a, b):\n    return b + a\n"),  # written again
    ("    return a + b\n\nprint(add(1, 2))\nassert add(1, 1) == 3\n```", True, RIGHT),  # its demo dropped
    ("    return a +\n```", True, None),
    ("```", True, None),
    ("    pass\n```", True, ADD + "    pass\n"),
]


@pytest.mark.parametrize(("text", "complete", "want"), PROGRAMS)
def test_the_program_of_a_completion(text, complete, want):
    assert program_of(TASK, text, complete) == want


def test_code_problems_refuse_what_is_not_a_function():
    with pytest.raises(CodeError, match="not valid Python"):
        code_problem("def f(:\n")
    with pytest.raises(CodeError, match="no function"):
        code_problem("x = 1\n")
    with pytest.raises(CodeError, match="signature"):
        code_problem("  ")
    p = code_problem(strip_fences(f"```python\n{ADD}```"))
    assert p.meta == {"domain": "code", "entry_point": "add"} and p.question.strip() == ADD.strip()


def test_humaneval_ships_with_its_hidden_tests():
    ds = load_dataset("humaneval")
    assert len(ds.problems) == 164 and not ds.errors
    p = ds.problems[0]
    assert p.id == "HumanEval/0" and "def check" in p.gold and p.meta["entry_point"] == "has_close_elements"
    with_examples = [q for q in ds.problems if CodeTask.of(q).examples]
    assert len(with_examples) == 130


@needs_sandbox
def test_every_canonical_humaneval_solution_passes_the_judge():
    import gzip
    from importlib import resources

    raw = resources.files("ttscale").joinpath("data/humaneval.jsonl.gz").read_bytes()
    rows = [json.loads(line) for line in gzip.decompress(raw).decode().splitlines()]
    problems = {p.id: p for p in load_dataset("humaneval").problems}
    runner = Runner()
    failed = []
    for row in rows:
        domain = CodeDomain(problems[row["task_id"]], runner)
        if not domain.is_correct(row["prompt"] + row["canonical_solution"], row["test"]):
            failed.append(row["task_id"])
        if domain.is_correct(row["prompt"] + "    return None\n", row["test"]):
            failed.append(row["task_id"] + " (a stub passed)")
    assert failed == []


def test_bad_code_rows_are_reported_by_line(tmp_path):
    rows = [
        {"task_id": "ok", "prompt": ADD, "entry_point": "add", "test": ADD_TESTS},
        {"task_id": "no-name", "prompt": ADD, "entry_point": ""},
        {"task_id": "bad-test", "prompt": ADD, "entry_point": "add", "test": "assert True"},
        {"task_id": "not-python", "prompt": "def f(:", "entry_point": "f"},
    ]
    path = tmp_path / "code.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    ds = load_dataset(str(path))
    assert [p.id for p in ds.problems] == ["ok"]
    assert [e.split(":")[0] for e in ds.errors] == ["line 2", "line 3", "line 4"]


def _script(bodies):
    """Programs for the code prompts, asserts for the test-writing prompt."""

    def script(prompt, seed):
        if prompt.partial.endswith("assert add("):
            return "2, 3) == 5\nassert add(1, 1) == 2\nassert add(0, 0) == 1\n```"
        return bodies[seed % 100 % len(bodies)]

    return script


WRONG = "    return a - b\n```"
GOOD = "    return a + b\n```"
ALSO_GOOD = "    return b + a\n```"


@needs_sandbox
def test_programs_are_grouped_by_behaviour_and_scored_by_execution():
    problem = code_problem(ADD, pid="add-1", tests=ADD_TESTS)
    gen = FakeGenerator(_script([WRONG, GOOD, ALSO_GOOD, "```"]))
    result = run_strategy("weighted_best_of_n", problem, gen, make_scorer("tests", gen), 4, RunSpec())
    domain = domain_of(problem)
    assert isinstance(domain, CodeDomain) and domain.tests == [
        "assert add(2, 3) == 5",
        "assert add(1, 1) == 2",
        "assert add(0, 0) == 1",
    ]
    assert domain.group([c.answer for c in result.candidates]) == [0, 1, 1, None]  # a + b and b + a behave alike
    scores = [c.score for c in result.candidates]
    assert scores[0] < scores[1] == scores[2] and scores[3] == 0.0  # the model's wrong test fails everyone
    assert result.chosen in (1, 2) and domain.is_correct(result.answer, problem.gold)
    assert result.compute.executed_tests == 3 * 5 and result.compute.test_tokens > 0
    examples, _ = make_scorer("examples").score(problem, result.candidates)
    assert examples == [[0.0], [1.0], [1.0], [0.0]]  # a - b gets neither example right


def test_math_only_strategies_refuse_code_tasks():
    problem = code_problem(ADD)
    gen = FakeGenerator(_script([GOOD]))
    for name in ("beam_search", "self_refine", "compute_optimal"):
        with pytest.raises(ValueError, match="code task"):
            run_strategy(name, problem, gen, make_scorer("logprob"), 2, RunSpec())
    with pytest.raises(ValueError, match="does not work on code"):
        check_domain("dvts", "code")
    with pytest.raises(ValueError, match="does not work on math"):
        check_domain("self_debug", "math")
    with pytest.raises(ValueError, match="not a code task"):
        self_debug(Problem("m", "1+1?"), gen, make_scorer("logprob"), 2)


@needs_sandbox
def test_self_debug_shows_the_failing_example_and_stops_once_it_passes():
    problem = code_problem(ADD, pid="add-2", tests=ADD_TESTS)
    gen = FakeGenerator(lambda prompt, seed: [WRONG, GOOD][min(1, sum(r == "assistant" for r, _ in prompt.messages))])
    result = self_debug(problem, gen, make_scorer("logprob"), 4, RunSpec())
    assert [c.answer for c in result.candidates] == [ADD + "    return a - b\n", RIGHT]
    assert result.answer == RIGHT and result.outcome["passed_at"] == 1 and result.outcome["rounds_saved"] == 2
    told = result.outcome["feedback"][0]
    assert "`add(2, 3)` returned `-1`" in told and "returns `5`" in told
    second_prompt = gen.calls[1][0][0]
    assert told in second_prompt.messages[-1][1] and second_prompt.partial.endswith(ADD)
    one = first_rounds(result, 1)
    assert one.answer == ADD + "    return a - b\n" and one.outcome["passed_at"] is None
    assert one.compute.generated_tokens < result.compute.generated_tokens


def test_a_failure_is_described_with_the_programs_own_lines():
    e = Example("f(1)", "2")
    error = (
        'boom\nTraceback (most recent call last):\n  File "<string>", line 99, in candidate_main\n    x\n'
        '  File "solution.py", line 2, in f\nZeroDivisionError: division by zero'
    )
    said = describe_failure("def f(x): ...", e, Verdict(False, None, error))
    assert "solution.py" in said and "ZeroDivisionError" in said and "candidate_main" not in said
    assert "did not finish" in describe_failure("p", e, Verdict(False, None, "timed out"))
    assert describe_failure(None, e, Verdict(False, None, "no program")) == "The reply holds no complete function."


def test_stored_programs_are_grouped_by_their_stored_behaviour():
    cands = [
        {"answer": "p1", "behaviour": {"signature": "A"}},
        {"answer": "p2", "behaviour": {"signature": "B"}},
        {"answer": "p3", "behaviour": {"signature": "A"}},
        {"answer": None, "behaviour": None},
    ]
    assert stored_groups(cands) == [0, 1, 0, None]
    assert stored_groups([{"answer": "1/2"}, {"answer": "0.5"}]) == [0, 0]  # math: by equivalence


CODE_REQUEST = {"messages": [{"role": "user", "content": f"```python\n{ADD}```"}], "ttscale": {"task": "code"}}


def test_a_server_takes_code_tasks_and_refuses_bad_ones():
    from ttscale.apps.serve import BadRequest, ServeConfig, parse_request

    cfg = ServeConfig(model="m", strategy="weighted_best_of_n", n=4)
    job = parse_request({**CODE_REQUEST, "ttscale": {"task": "code", "scorer": "tests"}}, cfg)
    assert job.problem.meta == {"domain": "code", "entry_point": "add"} and job.scorer == "tests"
    assert "Python programmer" in job.system
    bad = [
        ({"task": "code", "strategy": "beam_search"}, "does not work on code"),
        ({"task": "code", "scorer": "examples", "strategy": "self_refine"}, "does not work on code"),
        ({"task": "math", "scorer": "tests"}, "unavailable scorer"),
        ({"task": "sql"}, "ttscale.task"),
    ]
    for options, message in bad:
        with pytest.raises(BadRequest, match=message):
            parse_request({**CODE_REQUEST, "ttscale": options}, cfg)
    not_code = {"messages": [{"role": "user", "content": "def f(:"}], "ttscale": {"task": "code"}}
    with pytest.raises(BadRequest, match="not valid Python"):
        parse_request(not_code, cfg)


@needs_sandbox
def test_a_served_code_task_answers_with_the_program_and_what_each_did():
    import threading

    from ttscale.apps.http import serve
    from ttscale.apps.serve import ServeConfig
    from ttscale.testing import FakeGenerator as Fake

    cfg = ServeConfig(model="fake", strategy="best_of_n", n=3, scorer="examples", workers=1, timeout=60)
    served = "    return a + b  # served\n```"  # a program no other test ran: the cache has no result for it
    httpd = serve(cfg, lambda: Fake(_script([WRONG, served, "```"])), "127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        import urllib.request

        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1/chat/completions"
        body = {**CODE_REQUEST, "ttscale": {"task": "code", "return_candidates": True}}
        req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            answer = json.loads(r.read())
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert answer["choices"][0]["message"]["content"] == f"```python\n{ADD}    return a + b  # served\n```"
    rows = answer["ttscale"]["candidates"]
    assert [sum(e["passed"] for e in r["examples"]) if r["examples"] else None for r in rows] == [0, 2, None]
    assert rows[1]["examples"][0] == {"call": "add(2, 3)", "got": "5", "passed": True}
    assert answer["ttscale"]["compute"]["executed_tests"] > 0


@needs_sandbox
def test_an_eval_of_code_tasks_records_behaviour_tests_and_execution(tmp_path):
    from ttscale.core import SamplingParams
    from ttscale.evaluation import EvalConfig, run_eval
    from ttscale.tasks.code import CODE_SYSTEM_PROMPT

    rows = [{"task_id": f"add-{k}", "prompt": ADD, "entry_point": "add", "test": ADD_TESTS} for k in range(2)]
    ds = tmp_path / "code.jsonl"
    ds.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = EvalConfig(
        dataset=str(ds),
        ns=(1, 2, 4),
        model="fake",
        sampling=SamplingParams(max_tokens=64, stop=("```",)),
        system_prompt=CODE_SYSTEM_PROMPT,
        strategies=("majority", "best_of_n", "weighted_best_of_n", "self_debug"),
        scorer="examples",
    )

    def make():
        def script(prompt, seed):
            if prompt.partial.endswith("assert add("):
                return "2, 3) == 5\n```"
            rounds = sum(r == "assistant" for r, _ in prompt.messages)
            return GOOD if rounds or seed % 100 in (1, 3) else WRONG

        return FakeGenerator(script)

    report = run_eval(cfg, make, tmp_path / "run", progress=False, n_boot=10)
    records = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    pool = next(r for r in records if r.get("kind") != "search")
    assert pool["tests"] == ["assert add(2, 3) == 5"] and pool["compute"]["test_tokens"] > 0
    assert [c["correct"] for c in pool["candidates"]] == [False, True, False, True]
    assert pool["candidates"][0]["hidden_error"].startswith("AssertionError")
    assert pool["candidates"][1]["behaviour"]["examples_passed"] == [True, True]
    assert set(pool["candidates"][0]["scores"]) == {*FREE, "examples", "tests"}
    debug = {r["n"]: r for r in records if r.get("strategy") == "self_debug" and r["id"] == "add-0"}
    assert sorted(debug) == [1, 2, 4] and debug[4]["correct"] and not debug[1]["correct"]
    assert debug[4]["settings"]["passed_at"] == 1 and debug[2]["settings"].get("derived_from") == 4
    best = next(p for p in report.points if p.strategy == "best_of_n" and p.n == 4)
    assert best.accuracy == 1.0 and best.executed_tests > 0
    from ttscale.apps.bench import bench_reproduce

    again = bench_reproduce(tmp_path / "run", records=10, make_generator=lambda hidden, threads: make())
    assert again["reproduced_exactly"] == len(again["records"]) == 2  # both pools, their tests included


def test_without_isolation_code_runs_only_when_told_and_says_so(monkeypatch, capsys):
    from ttscale.tasks import sandbox
    from ttscale.tasks.sandbox import SandboxError

    monkeypatch.setattr(sandbox, "isolation_available", lambda: False)
    with pytest.raises(SandboxError, match="TTSCALE_UNISOLATED_CODE=1"):
        Runner().run(TASK, [RIGHT], hidden_tests(ADD_TESTS))
    monkeypatch.setenv("TTSCALE_UNISOLATED_CODE", "1")
    runner = Runner()
    (right,), _ = runner.run(TASK, [RIGHT], hidden_tests(ADD_TESTS))
    (cheat,), _ = runner.run(TASK, [CHEATS[0][1]], hidden_tests(ADD_TESTS))
    assert right[0].passed and not cheat[0].passed  # the judge still keeps the program out
    assert "WITHOUT isolation" in capsys.readouterr().err


@needs_sandbox
def test_self_debug_stops_when_a_revision_repeats_the_program():
    problem = code_problem(ADD, pid="add-3", tests=ADD_TESTS)
    r = self_debug(problem, FakeGenerator(_script([WRONG])), make_scorer("logprob"), 6, RunSpec())
    assert len(r.candidates) == 2 and r.outcome["rounds_saved"] == 4 and r.outcome["passed_at"] is None
    every = self_debug(problem, FakeGenerator(_script([WRONG])), make_scorer("logprob"), 3, stop_on_repeat=False)
    assert len(every.candidates) == 3
