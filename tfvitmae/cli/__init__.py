"""The `tfvitmae` command: `parser.py` (the arguments and `main`),
`commands.py` (what each sub-command does) and `demo.py` (`tfvitmae demo`).
Heavy imports happen inside the commands, so `tfvitmae --help` starts fast."""

from .parser import build_parser, main

__all__ = ["build_parser", "main"]
