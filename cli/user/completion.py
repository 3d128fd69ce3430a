"""`weft completion bash|zsh`: a completion script generated from the command tree itself, so it never
lags behind the commands (no extra dependency: the words are baked in when the script is printed)."""

from __future__ import annotations

import argparse
import shlex

_BASH = """# weft shell completion ({shell}); load with: source <(weft completion {shell})
{preamble}declare -A _weft_words=(
{table}
)
_weft() {{
  local cur="${{COMP_WORDS[COMP_CWORD]}}" path="weft" w i
  for ((i=1; i<COMP_CWORD; i++)); do
    w="${{COMP_WORDS[i]}}"
    [[ "$w" == -* ]] && continue
    [[ -n "${{_weft_words["$path $w"]+set}}" ]] && path="$path $w"
  done
  COMPREPLY=($(compgen -W "${{_weft_words[$path]}}" -- "$cur"))
}}
complete -F _weft weft
"""
_ZSH_PREAMBLE = "autoload -U +X compinit && compinit\nautoload -U +X bashcompinit && bashcompinit\n"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps subparsers here; there is no public accessor
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def words(parser: argparse.ArgumentParser, path: str = "weft") -> dict[str, list[str]]:
    """Each command path ("weft workflows list") and the words that may follow it."""
    subs = _subcommands(parser)
    options = [s for a in parser._actions for s in a.option_strings]
    table = {path: [*subs, *options]}
    for name, child in subs.items():
        table.update(words(child, f"{path} {name}"))
    return table


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    rows = "\n".join(f"  [{shlex.quote(path)}]={shlex.quote(' '.join(found))}"
                     for path, found in words(parser).items())
    return _BASH.format(shell=shell, preamble=_ZSH_PREAMBLE if shell == "zsh" else "", table=rows)


def add_parsers(sub: argparse._SubParsersAction, root: argparse.ArgumentParser) -> None:
    p = sub.add_parser("completion", help="print a shell completion script: source <(weft completion bash)")
    p.add_argument("shell", choices=("bash", "zsh"))
    p.set_defaults(fn=lambda args: print(script(root, args.shell), end="") or 0)
