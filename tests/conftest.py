import pytest

from ttscale.core import Prompt
from ttscale.testing import FakeGenerator


def scripted(answers_by_seed):
    """A FakeGenerator whose sample j (by its seed's last two digits) writes answers_by_seed[j]."""

    def script(prompt: Prompt, seed: int) -> str:
        ans = answers_by_seed[seed % 100 % len(answers_by_seed)]
        topic = prompt.messages[-1][1][:10]
        return f"Step one for {topic}.\n\nStep two.\n\nTherefore, the final answer is $\\boxed{{{ans}}}$."

    return FakeGenerator(script)


@pytest.fixture
def fake_factory():
    return scripted
