"""MkDocs hooks for the kerastl site (mkdocs.yml `hooks:`).

`<!-- cli-reference -->` in a page becomes the `--help` of the `kerastl` command
and each of its subcommands, from the same parser the command uses.
"""

import pathlib
import sys

MARKER = "<!-- cli-reference -->"
ROOT = pathlib.Path(__file__).resolve().parents[2]


def _cli_reference():
    sys.path.insert(0, str(ROOT))
    try:
        import kerastl_cli
    finally:
        sys.path.remove(str(ROOT))
    parser = kerastl_cli.build_parser()
    parts = ["### kerastl", "", "```", parser.format_help().rstrip(), "```"]
    for action in parser._subparsers._group_actions:
        for name, sub in action.choices.items():
            parts += ["", f"### kerastl {name}", "", "```", sub.format_help().rstrip(), "```"]
    return "\n".join(parts)


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        return markdown.replace(MARKER, _cli_reference())
    return markdown
