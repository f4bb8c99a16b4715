"""The `ttscale` command. `arguments` says what each subcommand takes, `commands` what it
does; COMMANDS pairs them."""

from __future__ import annotations

from .arguments import PARSERS, build_parser
from .commands import RUNNERS, guarded

COMMANDS = {name: (PARSERS[name], RUNNERS[name]) for name in PARSERS}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(COMMANDS[args.command][1], args)


__all__ = ["COMMANDS", "build_parser", "main"]
