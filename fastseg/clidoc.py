"""The Markdown reference of the ``fastseg`` command line, rendered from the click commands themselves.

``python -m fastseg.clidoc > docs/cli.md`` regenerates docs/cli.md; tests/test_clidoc.py fails when the file is
stale, so ``--help``, the docs and the defaults in fastseg.config cannot drift apart.
"""

from __future__ import annotations

import inspect
import re
import sys

import click

from .cli import main

__all__ = ["render", "fit_table", "command_section", "option_default", "first_sentence"]

REGENERATE = "python -m fastseg.clidoc > docs/cli.md"
DEFAULT_TAIL = re.compile(r"\s*\[default: (.*)\]\s*$", re.S)  # how cli.py writes a default click cannot show itself


def md(text: str) -> str:
    """``text`` safe inside a Markdown table cell or paragraph (no HTML tags, emphasis or cell breaks)."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("*", r"\*").replace("|", r"\|").replace("\n", " "))


def option_default(param: click.Parameter) -> str:
    """The default ``--help`` shows: the ``[default: ...]`` that ends the help text, else click's own."""
    found = DEFAULT_TAIL.search(getattr(param, "help", None) or "")
    if found:
        return found.group(1)
    unset = param.default is None or param.default is getattr(click.core, "UNSET", None)  # click >= 8.3 says UNSET
    if getattr(param, "is_flag", False) or unset or not getattr(param, "show_default", True):
        return ""
    return str(param.default)


def option_help(param: click.Option) -> str:
    return DEFAULT_TAIL.sub("", param.help or "").strip()


def first_sentence(text: str) -> str:
    """``text`` up to its first full stop or semicolon outside parentheses (``e.g.`` is no full stop)."""
    depth = 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        ends = char in ".;" and text[i + 1:i + 2] in ("", " ") and not text[:i + 1].endswith("e.g.")
        if ends and depth == 0:
            return text[:i]
    return text


def option_type(param: click.Parameter) -> str:
    """What the option takes: ``flag``, the choices, or click's type name with its range."""
    kind = param.type
    if getattr(param, "is_flag", False):
        text = "flag"
    elif isinstance(kind, click.Choice):
        text = " \\| ".join(f"`{c}`" for c in kind.choices)
    elif isinstance(kind, (click.IntRange, click.FloatRange)):
        low = "" if kind.min is None else f"{'>' if kind.min_open else '>='} {kind.min}"
        high = "" if kind.max is None else f"{'<' if kind.max_open else '<='} {kind.max}"
        text = f"{'integer' if isinstance(kind, click.IntRange) else 'number'} {', '.join(filter(None, (low, high)))}"
    else:
        text = md(kind.name)
    return text + (" (repeatable)" if getattr(param, "multiple", False) else "")


def option_names(param: click.Option) -> str:
    names = ", ".join(f"`{o}`" for o in param.opts)
    return names + "".join(f" / `{o}`" for o in param.secondary_opts)


def default_cell(default: str) -> str:
    """A value as code; a description of one (``a timestamp``) as text."""
    return f"`{md(default)}`" if default and " " not in default else md(default)


def shown_options(cmd: click.Command, ctx: click.Context) -> list[click.Option]:
    """The options ``--help`` lists, less --help itself."""
    helps = set(ctx.help_option_names)
    return [p for p in cmd.get_params(ctx)
            if isinstance(p, click.Option) and not p.hidden and not helps & set(p.opts)]


def _paragraphs(cmd: click.Command) -> list[str]:
    """The docstring as Markdown: prose paragraphs joined, click's ``\\b`` blocks (the examples) as code."""
    out = []
    for para in re.split(r"\n\s*\n", inspect.cleandoc(cmd.help or "")):
        lines = para.splitlines()
        if lines and lines[0].strip() == "\b":
            title, *code = lines[1:]
            out.append(f"**{md(title.strip())}**\n\n```\n" + inspect.cleandoc("\n".join(code)) + "\n```")
        else:
            out.append(md(" ".join(line.strip() for line in lines)))
    return out


def command_section(cmd: click.Command, ctx: click.Context) -> str:
    """One command: heading, usage, description, examples, then the table of its options."""
    path = ctx.command_path
    usage = " ".join([path, *cmd.collect_usage_pieces(ctx)])
    parts = [f"## {path}", f"```\n{usage}\n```", *_paragraphs(cmd)]
    arguments = [p for p in cmd.get_params(ctx) if isinstance(p, click.Argument) and not p.required]
    if arguments:
        parts.append("Defaults: " + ", ".join(f"{p.human_readable_name} `{p.default}`" for p in arguments) + ".")
    rows = ["| option | takes | default | description |", "|---|---|---|---|"]
    for p in shown_options(cmd, ctx):
        rows.append(f"| {option_names(p)} | {option_type(p)} | {default_cell(option_default(p))} "
                    f"| {md(option_help(p))} |")
    parts.append("\n".join(rows))
    return "\n\n".join(parts)


def choices_note(param: click.Parameter) -> str:
    """`` (`a`, `b`)`` after a choice option's first sentence, which may not name its choices."""
    if not isinstance(param.type, click.Choice):
        return ""
    return " (" + ", ".join(f"`{c}`" for c in param.type.choices) + ")"


def fit_table(ctx: click.Context) -> str:
    """``fit``'s options in three columns (option, default, what it does): the README's table."""
    fit = main.commands["fit"]
    sub = click.Context(fit, info_name="fit", parent=ctx)
    rows = ["| option | default | what it does |", "|---|---|---|"]
    for p in shown_options(fit, sub):
        rows.append(f"| {option_names(p)} | {default_cell(option_default(p))} "
                    f"| {md(first_sentence(option_help(p)))}{choices_note(p)} |")
    return "\n".join(rows)


def render() -> str:
    """docs/cli.md: the fit table, then every command (in the order cli.py defines them)."""
    ctx = click.Context(main, info_name="fastseg")
    sections = [
        "# fastseg command line",
        f"Generated from `fastseg --help` by `{REGENERATE}`; edit the help in fastseg/cli.py (defaults and "
        "choices live in fastseg/config.py), not this file.",
        "## fit options at a glance",
        fit_table(ctx),
        command_section(main, ctx),
    ]
    for name, cmd in main.commands.items():
        sections.append(command_section(cmd, click.Context(cmd, info_name=name, parent=ctx)))
    return "\n\n".join(sections) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
