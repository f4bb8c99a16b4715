import json

import numpy as np
import pytest

from ttscale.apps.train_probe import _pack, dataset, fit, soft_labels, train
from ttscale.core import Candidate, Problem, Step
from ttscale.util.stats import auroc
from ttscale.verifiers.probe import Probe, ProbeError, ProbeScorer


def test_auroc_known_values():
    assert auroc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    assert np.isnan(auroc([0.3], [True]))


def test_soft_labels_share_outcomes_over_common_prefixes():
    sols = [
        {"steps": ["a", "b"], "correct": True},
        {"steps": ["a", "c"], "correct": False},
        {"steps": ["a", "b"], "correct": True},
        {"steps": ["d"], "correct": False},
    ]
    labels = soft_labels(sols)
    assert labels[0] == pytest.approx([2 / 3, 1.0])
    assert labels[1] == pytest.approx([2 / 3, 0.0])
    assert labels[3] == [0.0]


def planted(n_problems=60, k=6, d=16, seed=0):
    """Solutions whose step states carry the outcome along one hidden direction."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=d)
    records = []
    for p in range(n_problems):
        sols = []
        for j in range(k):
            correct = bool(rng.random() < 0.4)
            steps = [f"p{p}s{j}t{t}" for t in range(3)]
            hidden = [
                _pack(rng.normal(size=d) + (1.5 if correct else -1.5) * direction * (t + 1) / 3) for t in range(3)
            ]
            sols.append({"correct": correct, "steps": steps, "hidden": hidden})
        records.append({"id": f"p{p}", "solutions": sols})
    return records, direction


def test_training_recovers_a_planted_signal():
    records, direction = planted()
    probe = train(records, model_sha256="abc", val_fraction=0.25)
    assert probe.meta["val_auroc_last_step"] > 0.9
    assert probe.meta["problems"] == 60 and probe.meta["solutions"] == 360
    cosine = probe.weights @ direction / np.linalg.norm(probe.weights) / np.linalg.norm(direction)
    assert cosine > 0.5


def test_no_signal_gives_chance_auroc():
    rng = np.random.default_rng(1)
    records, _ = planted(seed=1)
    for rec in records:  # shuffle outcomes: nothing left to learn
        for sol in rec["solutions"]:
            sol["correct"] = bool(rng.random() < 0.5)
    assert abs(train(records, "abc").meta["val_auroc_last_step"] - 0.5) < 0.2


def test_fit_handles_soft_labels():
    x = np.array([[-2.0], [-1.0], [1.0], [2.0]])
    w, b, mean, scale = fit(x, np.array([0.1, 0.3, 0.7, 0.9]), l2=0.01)
    p = Probe(w, b, mean, scale, "m").predict(x)
    assert list(np.argsort(p)) == [0, 1, 2, 3] and 0.05 < p[0] < p[3] < 0.95


def test_save_load_and_refusal_for_another_model(tmp_path):
    records, _ = planted(n_problems=10)
    probe = train(records, model_sha256="a" * 64)
    path = tmp_path / "probe.npz"
    probe.save(path)
    loaded = Probe.load(path, "a" * 64)
    states = dataset(records)[0][:5]
    assert loaded.predict(states) == pytest.approx(probe.predict(states), abs=1e-3)
    assert loaded.meta == json.loads(json.dumps(probe.meta))
    with pytest.raises(ProbeError, match="trained for the model with sha256 aaaaaaaaaaaa"):
        Probe.load(path, "b" * 64)
    with pytest.raises(ProbeError, match="cannot read probe"):
        Probe.load(tmp_path / "missing.npz")


def test_scorer_gives_per_step_scores_aligned_to_the_steps():
    d = 4
    probe = Probe(np.array([1.0, 0, 0, 0]), 0.0, np.zeros(d), np.ones(d), "m")
    steps = [Step(f"s{k}", hidden=np.array([k - 1.0, 0, 0, 0])) for k in range(3)]
    (scores,), compute = ProbeScorer(probe).score(Problem("p", "q"), [Candidate("x", steps)])
    assert scores == pytest.approx([1 / (1 + np.e), 0.5, 1 / (1 + np.exp(-1))])
    assert compute.verifier_tokens == 0
    with pytest.raises(ProbeError, match="hidden_states=True"):
        ProbeScorer(probe).score(Problem("p", "q"), [Candidate("x", [Step("no state")])])


def test_scorer_needs_an_engine_with_hidden_states():
    from ttscale.testing import FakeGenerator

    with pytest.raises(ProbeError, match="hidden_states=True"):
        ProbeScorer.for_generator(FakeGenerator(lambda p, s: "x"))


def test_probe_files_are_named_by_content_so_their_scores_never_mix(tmp_path):
    from ttscale.verifiers.probe import packaged_probe, probe_name
    from ttscale.verifiers.registry import scorer_name

    records, _ = planted(n_problems=10)
    first, second, copy = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "sub" / "a.npz"
    train(records, model_sha256="a" * 64, l2=1.0).save(first)
    train(records, model_sha256="a" * 64, l2=1e3).save(second)
    copy.parent.mkdir()
    copy.write_bytes(first.read_bytes())
    assert scorer_name(f"probe@{first}").startswith("probe@") and len(scorer_name(f"probe@{first}")) == 18
    assert scorer_name(f"probe@{first}") == scorer_name(f"probe@{copy}")  # same weights, another path
    assert scorer_name(f"probe@{first}") != scorer_name(f"probe@{second}")
    shipped = packaged_probe("qwen2.5-coder-0.5b")
    assert shipped is not None and probe_name(shipped) == "probe" == scorer_name("probe")
    with pytest.raises(ProbeError, match="cannot read probe"):
        scorer_name(f"probe@{tmp_path / 'missing.npz'}")


def test_training_problems_take_the_chosen_levels_where_a_file_has_levels():
    from pathlib import Path

    from ttscale.apps.train_probe import training_problems

    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (data / "math_train.jsonl").exists():
        pytest.skip("../shared/data is not present")
    problems = training_problems([str(data / "gsm8k_train.jsonl"), str(data / "math_train.jsonl")], 5, (1, 2))
    assert len(problems) == 10
    assert all("level" not in p.meta for p in problems[:5])  # GSM8K has no levels: taken whole
    assert {p.meta["level"] for p in problems[5:]} <= {"Level 1", "Level 2"}
    assert all(p.gold for p in problems)


@pytest.mark.parametrize(
    ("subjects", "expected"),
    [
        ([], []),
        (["a", "a", "b"], [0, 2, 1]),
        (["a", "a", "a", "b", "c", "c"], [0, 3, 4, 1, 5, 2]),
        ([None, "a", None], [0, 1, 2]),  # rows with no subject form one subject of their own
        (["b", "a", "b", "a"], [0, 1, 2, 3]),  # subjects keep their order of first appearance
    ],
)
def test_interleaving_by_subject_takes_one_from_each_subject_in_turn(subjects, expected):
    from ttscale.core import Problem
    from ttscale.tasks.datasets import interleave_by_subject

    problems = [
        Problem(id=str(i), question="q", gold="1", meta={} if s is None else {"subject": s})
        for i, s in enumerate(subjects)
    ]
    assert [int(p.id) for p in interleave_by_subject(problems)] == expected


def test_training_problems_by_subject_spread_math_train_over_its_seven_subjects():
    from pathlib import Path

    from ttscale.apps.train_probe import training_problems

    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (data / "math_train.jsonl").exists():
        pytest.skip("../shared/data is not present")
    plain = training_problems([str(data / "math_train.jsonl")], 70, (1, 2, 3))
    spread = training_problems([str(data / "math_train.jsonl")], 70, (1, 2, 3), by_subject=True)
    assert {p.meta["subject"] for p in plain} == {"Algebra"}  # the file is sorted by subject
    assert {p.meta["subject"] for p in spread} == {
        "Algebra",
        "Counting & Probability",
        "Geometry",
        "Intermediate Algebra",
        "Number Theory",
        "Prealgebra",
        "Precalculus",
    }
    assert len(spread) == 70 == len({p.id for p in spread})
    assert spread[0].id == plain[0].id  # each subject's own order is kept: a resumed collection reuses it
