"""The core objects check themselves: sampling parameters, run specs, seeds."""

import pytest

from ttscale.core import SamplingParams, aggregate, problem_seed, sample_seed
from ttscale.core.seeds import expansion_seed, growth_seed, round_seed
from ttscale.strategies import RunSpec


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"temperature": 0.0},
        {"temperature": 1.5, "top_p": 1.0, "top_k": 0},
        {"max_tokens": 1, "seed": 2**40},
        {"stop": ("\n\n", "###")},
    ],
)
def test_valid_sampling_parameters(fields):
    p = SamplingParams(**fields)
    assert SamplingParams.from_dict(p.to_dict()) == p


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"temperature": -0.1}, "temperature must be at least 0"),
        ({"temperature": float("nan")}, "temperature must be a number"),
        ({"temperature": "hot"}, "temperature must be a number"),
        ({"top_p": 0.0}, "top_p must be above 0"),
        ({"top_p": 1.01}, "top_p must be above 0.0 and at most 1.0"),
        ({"top_k": -1}, "top_k must be from 0"),
        ({"top_k": 2.5}, "top_k must be an integer"),
        ({"max_tokens": 0}, "max_tokens must be from 1"),
        ({"max_tokens": True}, "max_tokens must be an integer"),
        ({"seed": -1}, "seed must be from 0"),
        ({"stop": "\n\n"}, "stop must be a sequence of strings"),
        ({"stop": (1,)}, "stop must be a sequence of strings"),
    ],
)
def test_invalid_sampling_parameters_say_what_is_wrong(fields, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**fields)


def test_stop_given_as_a_list_is_kept_as_a_tuple():
    assert SamplingParams(stop=["a"]).stop == ("a",)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "message"), [({"aggregation": "median"}, "unknown aggregation"), ({"step_tokens": 0}, "step_tokens")]
)
def test_a_run_spec_checks_itself(fields, message):
    with pytest.raises(ValueError, match=message):
        RunSpec(**fields)


def test_seeds_depend_only_on_where_a_draw_sits():
    assert problem_seed(0, "q1") == problem_seed(0, "q1") != problem_seed(1, "q1")
    assert problem_seed(0, "q1") != problem_seed(0, "q2") and 0 <= problem_seed(7, "x") < 2**31
    assert growth_seed(5, "q1", 16) not in (problem_seed(5, "q1"), growth_seed(5, "q1", 32))
    assert len({expansion_seed(3, k) for k in range(50)}) == 50 and len({round_seed(3, k) for k in range(50)}) == 50
    seeds = {sample_seed(s, i, j) for s in range(4) for i in range(8) for j in range(16)}
    assert len(seeds) == 4 * 8 * 16 and 0xFFFFFFFF not in seeds


@pytest.mark.parametrize(
    ("how", "scores", "expected"),
    [
        ("last", [0.2, 0.9], 0.9),
        ("min", [0.2, 0.9], 0.2),
        ("prod", [0.5, 0.5], 0.25),
        ("mean", [0.2, 0.6], 0.4),
        ("mean", [], 0.0),
    ],
)
def test_aggregations(how, scores, expected):
    assert aggregate(scores, how) == pytest.approx(expected)
