"""The `weft` commands for users, over the Python client (weft_client) and a running gateway: workflows, run,
runs, approvals, schedules, parse, completion. The admin commands (token, migrate, up, api-key) are in cli/main.py.
"""

from __future__ import annotations

import argparse

from cli.user import approvals, completion, runs, schedules, workflows
from cli.user.common import options


def add_parsers(sub: argparse._SubParsersAction, root: argparse.ArgumentParser) -> None:
    """Register the user commands on the root parser's subcommands."""
    common = options()
    workflows.add_parsers(sub, common)
    runs.add_parsers(sub, common)
    approvals.add_parsers(sub, common)
    schedules.add_parsers(sub, common)
    completion.add_parsers(sub, root)


__all__ = ["add_parsers"]
