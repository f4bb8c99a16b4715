"""Code tasks: a function's signature and docstring in, a program out.

What a solver may use is the task's prompt and the examples its docstring gives (doctest
`>>>` lines, or lines such as `f(3) == 4`, `f(3) ➞ 4`). The hidden tests (HumanEval's
`check`) only ever grade. Every program runs in the sandbox under the judge
(`code_judge.py`), which keeps it out of the tests' process; results are cached per
(program, tests), so grouping, scoring and grading a pool run each program once.
"""

from __future__ import annotations

import ast
import doctest
import hashlib
import json
import os
import re
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import Compute, Problem, Prompt
from .code_judge import MARK
from .sandbox import Limits, RunResult, SandboxError, isolation_available, run_many

CODE_SYSTEM_PROMPT = (
    "You are an expert Python programmer. Complete the function the user gives you. "
    "Write only Python code, with any imports it needs, inside one ```python code block."
)
FENCE = "```"
JUDGE = Path(__file__).with_name("code_judge.py")
UNISOLATED_ENV = "TTSCALE_UNISOLATED_CODE"
TEST_TIMEOUT_S = 5.0  # one test (HumanEval's own harness allows 3 s)
SEPARATORS = ("==>", "==", "➞", "=>", "->", "should return", "returns", "return", "=", ":")


def unisolated_from_env() -> bool:
    """Whether the environment asks for model-written code to run without isolation."""
    return os.environ.get(UNISOLATED_ENV) == "1"


def warn_unisolated() -> None:
    """Said once per process, before the first unisolated run."""
    if not _WARNED:
        _WARNED.append(True)
        print(f"ttscale: WARNING: {UNISOLATED_ENV}=1: model-written code runs WITHOUT isolation", file=sys.stderr)


_WARNED: list[bool] = []


class CodeError(ValueError):
    pass


@dataclass(frozen=True)
class Example:
    """A call the docstring shows, and the value it says comes back (Python source)."""

    call: str
    want: str


@dataclass(frozen=True)
class Verdict:
    passed: bool
    got: str | None  # repr of the value a call returned
    error: str | None  # what went wrong: an exception with its traceback, a timeout, ...


@dataclass(frozen=True)
class CodeTask:
    prompt: str  # the code the model completes: imports, helpers, the signature, the docstring
    entry_point: str

    @classmethod
    def of(cls, problem: Problem) -> CodeTask:
        entry = problem.meta.get("entry_point") or entry_point_of(problem.question)
        return cls(problem.question, entry)

    @property
    def examples(self) -> list[Example]:
        return parse_examples(self.prompt, self.entry_point)


def is_code(problem: Problem) -> bool:
    return problem.meta.get("domain") == "code"


def code_problem(
    prompt: str, entry_point: str | None = None, pid: str | None = None, tests: str | None = None
) -> Problem:
    """A code problem from a signature and docstring (what `solve` and `serve` take)."""
    if not prompt.strip():
        raise CodeError("a code task needs the function's signature and docstring")
    try:
        ast.parse(prompt)
    except SyntaxError as e:
        raise CodeError(f"the code task is not valid Python: {e.msg} (line {e.lineno})") from None
    entry = entry_point or entry_point_of(prompt)
    pid = pid or "code-" + hashlib.sha1(prompt.encode()).hexdigest()[:12]
    return Problem(id=pid, question=prompt, gold=tests, meta={"domain": "code", "entry_point": entry})


def strip_fences(text: str) -> str:
    """A task pasted inside a ```python block, without the fences."""
    lines = text.strip().splitlines()
    if lines and lines[0].startswith(FENCE):
        lines = lines[1:]
    if lines and lines[-1].strip() == FENCE:
        lines = lines[:-1]
    return "\n".join(lines) + "\n"


def entry_point_of(prompt: str) -> str:
    """The last function the prompt defines (helpers come before it in HumanEval)."""
    try:
        tree = ast.parse(prompt)
    except SyntaxError as e:
        raise CodeError(f"the code task is not valid Python: {e.msg} (line {e.lineno})") from None
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    if not names:
        raise CodeError("the code task defines no function to complete")
    return names[-1]


def code_prompt(task: CodeTask, system: str, partial: str = "") -> Prompt:
    """The model continues the task's own code inside a code block (its answer starts with
    the signature and docstring, so it writes the body only, not the docstring again)."""
    user = f"Complete this Python function:\n\n{FENCE}python\n{task.prompt.strip()}\n{FENCE}"
    return Prompt(messages=(("system", system), ("user", user)), partial=f"{FENCE}python\n{task.prompt}" + partial)


def program_of(task: CodeTask, text: str, complete: bool = True) -> str | None:
    """The program a completion gives: the task's code followed by what the model wrote, up
    to the code block's end; a completion that rewrote the whole function is taken as it is
    (with the task's imports). None when neither is Python or nothing was written."""
    body = text.split(FENCE, 1)[0]
    if not complete and FENCE not in text:
        return None
    if not body.strip():
        return None
    for program in (task.prompt + body, _imports(task.prompt) + body):
        try:
            tree = ast.parse(program)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        if any(isinstance(n, ast.FunctionDef) and n.name == task.entry_point and _has_body(n) for n in tree.body):
            return _definitions(program, tree)
    return None


KEPT = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)


def _definitions(program: str, tree: ast.Module) -> str:
    """The program without its top-level statements that do things (calls, prints, its own
    asserts, `if __name__ == "__main__":` demos): what it defines is the answer; a demo that
    fails, or waits for input, is not (EvalPlus sanitises programs the same way)."""
    if all(isinstance(n, KEPT) for n in tree.body):
        return program
    lines = program.splitlines()
    kept = []
    for node in tree.body:
        if isinstance(node, KEPT):
            first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
            kept.append("\n".join(lines[first - 1 : node.end_lineno]))
    return "\n\n".join(kept) + "\n"


def _has_body(fn: ast.FunctionDef) -> bool:
    rest = (
        fn.body[1:]
        if fn.body and isinstance(fn.body[0], ast.Expr) and isinstance(fn.body[0].value, ast.Constant)
        else fn.body
    )
    return bool(rest)


def _imports(prompt: str) -> str:
    lines = [ln for ln in prompt.splitlines() if ln.startswith(("import ", "from "))]
    return "\n".join(lines) + "\n" if lines else ""


# ---- the docstring's examples --------------------------------------------------------------
def parse_examples(prompt: str, entry_point: str) -> list[Example]:
    """The calls of `entry_point` that the docstring shows with their values: doctest lines,
    and `f(x) == y`-style lines (HumanEval writes both). Values must be Python literals."""
    found: list[Example] = []
    for ex in doctest.DocTestParser().get_examples(prompt):
        # a docstring closing right under the value leaves its quotes in doctest's "want"
        want_lines = [ln for ln in ex.want.splitlines() if ln.strip() not in ('"""', "'''")]
        call, want = ex.source.strip(), "\n".join(want_lines).strip()
        if entry_point in call and want and _literal(want) and _expression(call):
            found.append(Example(call, want))
    if not found:
        for line in prompt.splitlines():
            if (example := _inline_example(line, entry_point)) is not None:
                found.append(example)
    return list(dict.fromkeys(found))


def _inline_example(line: str, entry_point: str) -> Example | None:
    at = line.find(entry_point + "(")
    if at < 0 or ">>>" in line:
        return None
    text = line[at:]
    for end in (m.end() for m in re.finditer(r"\)", text)):
        call, rest = text[:end], text[end:].strip()
        if not _expression(call):
            continue
        for sep in SEPARATORS:
            if rest.lower().startswith(sep):
                want = rest[len(sep) :].strip().rstrip(".,;")
                if want and _literal(want):
                    return Example(call, want)
        return None
    return None


def _literal(text: str) -> bool:
    try:
        ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return True


def _expression(text: str) -> bool:
    """A call with literal arguments only (`is_happy(a)` in a docstring is prose, not a call)."""
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        return False
    return isinstance(node, ast.Call) and all(
        _literal(ast.unparse(a)) for a in [*node.args, *(k.value for k in node.keywords)]
    )


# ---- tests, and running them -----------------------------------------------------------------
def example_tests(examples: list[Example]) -> list[dict[str, Any]]:
    return [{"kind": "call", "expr": e.call, "want": e.want} for e in examples]


def probe_tests(calls: list[str]) -> list[dict[str, Any]]:
    """Calls whose values are only recorded: a program's behaviour."""
    return [{"kind": "call", "expr": c, "want": None} for c in calls]


def hidden_tests(test_code: str) -> list[dict[str, Any]]:
    """The task's own grader: code defining check(candidate), called with the program's function."""
    return [{"kind": "check", "code": test_code}]


def assert_tests(asserts: list[str]) -> list[dict[str, Any]]:
    return [{"kind": "assert", "code": a} for a in asserts]


class Runner:
    """Runs tests against programs in the sandbox, two at a time, each (program, tests) once
    per process (a bounded cache). Charges what it actually ran.

    Without root there is no isolation, and programs are refused, unless the environment
    says TTSCALE_UNISOLATED_CODE=1: then they run with the limits but without namespaces or
    another user, and a warning says so."""

    def __init__(
        self, limits: Limits | None = None, workers: int = 2, cache_size: int = 4096, unisolated: bool | None = None
    ):
        # a whole job (every test of one program) may take a minute; each test has its own deadline
        self.limits = limits or Limits(timeout_s=60.0, cpu_s=30)
        self.workers, self.cache_size = workers, cache_size
        self.unisolated = unisolated_from_env() if unisolated is None else unisolated
        self._cache: OrderedDict[str, list[Verdict]] = OrderedDict()
        self._lock = threading.Lock()

    def run(
        self, task: CodeTask, programs: list[str | None], tests: list[dict[str, Any]]
    ) -> tuple[list[list[Verdict]], Compute]:
        """Each program's outcome on every test; a missing program fails them all unrun."""
        if not tests:
            return [[] for _ in programs], Compute()
        keys = [None if p is None else _key(task, p, tests) for p in programs]
        with self._lock:
            known = {k: self._cache[k] for k in keys if k is not None and k in self._cache}
        todo = {k: p for k, p in zip(keys, programs, strict=True) if k is not None and p is not None and k not in known}
        if todo and self.unisolated:
            warn_unisolated()
        results = run_many(
            [JUDGE.read_text("utf-8")] * len(todo),
            stdins=[_job(task, p, tests, self.unisolated) for p in todo.values()],
            workers=self.workers,
            limits=self.limits,
            unisolated=self.unisolated,
        )
        fresh = {k: _outcomes(r, len(tests)) for k, r in zip(todo, results, strict=True)}
        with self._lock:
            self._cache.update(fresh)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        known.update(fresh)
        unrun = [Verdict(False, None, "no program") for _ in tests]
        outcomes = [unrun if k is None else known[k] for k in keys]
        seconds = sum(r.seconds for r in results)
        return outcomes, Compute(executed_tests=len(todo) * len(tests), execution_time=seconds)


def _key(task: CodeTask, program: str, tests: list[dict[str, Any]]) -> str:
    blob = json.dumps([task.prompt, task.entry_point, program, tests], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _job(task: CodeTask, program: str, tests: list[dict[str, Any]], unisolated: bool) -> str:
    return json.dumps(
        {
            "prompt": task.prompt,
            "entry_point": task.entry_point,
            "program": program,
            "tests": tests,
            "timeout": TEST_TIMEOUT_S,
            "isolated": isolation_available() and not unisolated,
        }
    )


def _outcomes(result: RunResult, n_tests: int) -> list[Verdict]:
    """The judge's verdicts; a judge that did not finish (the whole run out of time, say)
    fails every test, saying why."""
    for line in reversed(result.stdout.splitlines()):
        if line.startswith(MARK):
            try:
                rows = json.loads(line[len(MARK) :])
            except ValueError:
                break
            if isinstance(rows, list) and len(rows) == n_tests:
                return [Verdict(bool(r.get("passed")), r.get("got"), r.get("error")) for r in rows]
            break
    why = f"the judge did not finish ({result.limit or 'exit ' + str(result.returncode)})"
    if "ttscale sandbox:" in result.stderr:
        raise SandboxError(result.stderr.strip().splitlines()[-1])
    return [Verdict(False, None, why) for _ in range(n_tests)]
