"""Test helpers for users of ttscale: the deterministic fake engine (see `engines.fake`)."""

from .engines.fake import FakeGenerator, Script

__all__ = ["FakeGenerator", "Script"]
