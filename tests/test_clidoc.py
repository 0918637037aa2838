"""docs/cli.md is rendered from the click commands: it must match them, and every command shows an example."""

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from fastseg.cli import describe_choices, main
from fastseg.clidoc import REGENERATE, first_sentence, option_default, render
from fastseg.config import (AUG_CHOICES, BACKEND_CHOICES, CACHE_CHOICES, EXPORT_FORMAT_CHOICES, SPLIT_CHOICES, FitConfig,
                            PredictConfig)

DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
COMMANDS = [[], *([name] for name in main.commands)]


def test_docs_cli_md_matches_the_commands():
    assert (DOC.read_text() if DOC.exists() else "") == render(), f"docs/cli.md is stale: regenerate it with `{REGENERATE}`"


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "fastseg")
def test_every_command_help_has_an_example(args):
    res = CliRunner().invoke(main, [*args, "--help"])
    assert res.exit_code == 0
    assert "Example" in res.output
    assert " ".join(["fastseg", *args]) + " " in res.output.split("Example", 1)[1]


def _option(command: str, name: str) -> click.Option:
    return next(p for p in main.commands[command].params if name in getattr(p, "opts", ()))


@pytest.mark.parametrize("command, name, value", [
    ("fit", "--bs", FitConfig().bs), ("fit", "--epochs", FitConfig().epochs), ("fit", "--lr", FitConfig().lr),
    ("fit", "--weights", FitConfig().weights), ("fit", "--cache", FitConfig().cache),
    ("fit", "--num-workers", FitConfig().num_workers), ("fit", "--compile", "no-compile"),
    ("fit", "--sync-bn", "sync-bn"), ("fit", "--layout", FitConfig().layout),
    ("predict", "--bs", PredictConfig().bs), ("predict", "--overlap", PredictConfig().overlap),
    ("predict", "--backend", PredictConfig().backend), ("predict", "--format", PredictConfig().format),
    ("predict", "--workers", PredictConfig().workers),
])
def test_shown_defaults_are_the_config_defaults(command, name, value):
    assert option_default(_option(command, name)) == str(value)


@pytest.mark.parametrize("command, name, choices", [
    ("fit", "--cache", CACHE_CHOICES), ("fit", "--aug", AUG_CHOICES), ("predict", "--backend", BACKEND_CHOICES),
    ("export", "--format", EXPORT_FORMAT_CHOICES), ("evaluate", "--split", SPLIT_CHOICES),
])
def test_choice_lists_are_the_config_tuples(command, name, choices):
    assert tuple(_option(command, name).type.choices) == choices


def test_describe_choices_refuses_a_choice_without_a_description():
    with pytest.raises(ValueError, match="choices are"):
        describe_choices(("a", "b"), {"a": "one"})
    assert describe_choices(("b", "a"), {"a": "one", "b": "two"}) == "b: two; a: one"


def test_first_sentence_keeps_parentheses_and_eg():
    assert first_sentence("Train (GPU runs; slower). More.") == "Train (GPU runs; slower)"
    assert first_sentence("Weights (e.g. 1,5).  Rest") == "Weights (e.g. 1,5)"


def test_cli_retypes_no_default_or_choice_list():
    import re

    import fastseg.cli

    source = Path(fastseg.cli.__file__).read_text()
    assert not re.findall(r"Choice\(\s*[\[(]", source), "choice lists belong in fastseg.config"
    literals = set(re.findall(r"default=(\"[^\"]*\"|'[^']*'|[0-9][0-9.e-]*)", source))
    # defaults only these commands have (where plots and masks go), so defined once, here
    assert literals <= {'"exports/lr_find.png"', '"predictions"', '"exports/confusion.png"'}
    assert not re.findall(r"\[default: [0-9]", source), "a number in [default: ...] belongs in fastseg.config"


def test_readme_fit_table_shows_the_defaults_help_shows():
    """The README's table of fit options is hand-picked, but its defaults come from the same place as --help."""
    import re

    readme = (DOC.parent.parent / "README.md").read_text()
    table = readme.split("| option | default | meaning |", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `(--[a-z-]+)` \| ([^|]*) \|", table, re.M)
    assert len(rows) >= 10
    for name, shown in rows:
        assert shown.strip().strip("`") == (option_default(_option("fit", name)) or "none"), name
