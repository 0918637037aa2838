"""The ``fastseg`` command line: click only. Options -> FitConfig -> core call -> printed result.

Every ``FastsegError`` from the core becomes one ``Error: ...`` line and exit code 1.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import click

from .config import FitConfig
from .errors import FastsegError

DEFAULTS = FitConfig()


class FastsegGroup(click.Group):
    """A click group that turns the core's FastsegError into a one-line ClickException."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FastsegError as e:
            raise click.ClickException(str(e)) from None


def _notify(message: str) -> None:
    click.echo(message, err=message.startswith("Warning"))


def _quiet_library_warnings() -> None:
    # Deprecation chatter from torch/timm/SMP internals says nothing the user can act on.
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(torch|timm|segmentation_models_pytorch|fastai)\b")


class AutoOrInt(click.ParamType):
    """An integer >= ``minimum``, or the word ``auto``."""

    name = "auto|int"

    def __init__(self, minimum: int):
        self.minimum = minimum

    def convert(self, value, param, ctx):
        if value == "auto" or isinstance(value, int):
            return value
        try:
            number = int(value)
        except ValueError:
            self.fail(f"'{value}' is not 'auto' or an integer", param, ctx)
        if number < self.minimum:
            self.fail(f"{number} is not 'auto' or an integer >= {self.minimum}", param, ctx)
        return number


def data_model_options(f):
    """Options shared by every command that builds data and a model (fit, lr-find)."""
    opts = [
        click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
                     help="JSON/YAML file of options; options given here override it."),
        click.option("--data", type=click.Path(), help=f"Data folder with images/ and masks/.  [default: {DEFAULTS.data}]"),
        click.option("--bs", type=AutoOrInt(1),
                     help=f"Batch size, or 'auto': the largest that fits the device (printed).  [default: {DEFAULTS.bs}]"),
        click.option("--size", type=click.IntRange(min=32),
                     help="Training crop side, a multiple of 32.  [default: min(256, smallest image side)]"),
        click.option("--encoder", help=f"SMP encoder name.  [default: {DEFAULTS.encoder}]"),
        click.option("--weights", help="Encoder weights: imagenet, none, or a .pth/.safetensors file.  [default: imagenet]"),
        click.option("--valid-pct", type=float, help=f"Validation share when the data has no split.  [default: {DEFAULTS.valid_pct}]"),
        click.option("--seed", type=int, help=f"Random seed (split, initialisation, augmentation).  [default: {DEFAULTS.seed}]"),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def speed_options(f):
    """Device and speed options (fit, lr-find): DataLoader workers, RAM cache, torch.compile."""
    opts = [
        click.option("--num-workers", type=AutoOrInt(0),
                     help="DataLoader worker processes, or 'auto' (0 on CPUs with <= 4 cores).  [default: auto]"),
        click.option("--cache", type=click.Choice(["auto", "ram", "none"]),
                     help="Keep decoded images in RAM: auto (when they fit), ram, none.  [default: auto]"),
        click.option("--compile/--no-compile", "compile", default=None,
                     help="Train through torch.compile (GPU runs; slower to start).  [default: no]"),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def build_config(config_file: str | None, **options) -> FitConfig:
    """The CLI's options (only those given) over the config file's over the defaults."""
    given = {k: v for k, v in options.items() if v is not None}
    if config_file:
        return FitConfig.from_file(config_file, **given)
    return FitConfig(**given)


def _parse_lr(value: str | None):
    if value is None or value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not 'auto' or a number", param_hint="--lr") from None


@click.group(cls=FastsegGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fastseg")
def main():
    """fastseg: train, evaluate and deploy image segmentation models (fastai + SMP Unet).

    \b
    Quick start:
      fastseg fit --epochs 25              # train on ./data, export exports/model.pkl
      fastseg predict exports/model.pkl photos/ --out predictions/
    """
    _quiet_library_warnings()


@main.command()
@data_model_options
@speed_options
@click.option("--epochs", type=click.IntRange(min=1), help=f"Training epochs.  [default: {DEFAULTS.epochs}]")
@click.option("--lr", help="Peak learning rate, or 'auto' to use the LR finder's suggestion.  [default: auto]")
@click.option("--export", type=click.Path(dir_okay=False), help=f"Where to write the fastai learner.  [default: {DEFAULTS.export}]")
def fit(config_file, lr, **options):
    """Train a Unet on a folder of images and masks, then export it.

    \b
    Example:
      fastseg fit --epochs 25
      fastseg fit --data ~/datasets/cells --size 256 --weights none --lr 3e-3
      fastseg fit --data ~/datasets/cells --bs auto --cache ram
    """
    from .train import fit as run_fit

    cfg = build_config(config_file, lr=_parse_lr(lr), **options)
    result = run_fit(cfg, notify=_notify)
    m = result.metrics
    click.echo(f"\nvalid mIoU {m['miou']:.4f}  Dice {m['dice']:.4f}  pixel accuracy {m['pixel_accuracy']:.4f}")
    for name, s in m["per_class"].items():
        iou = "   n/a" if s["iou"] is None else f"{s['iou']:.4f}"
        click.echo(f"  {name:<20} IoU {iou}")
    click.echo(f"exported {result.export}")


@main.command("lr-find")
@data_model_options
@speed_options
@click.option("--plot", type=click.Path(dir_okay=False), default="exports/lr_find.png", show_default=True,
              help="Where to save the loss-vs-learning-rate plot.")
def lr_find_cmd(config_file, plot, **options):
    """Run the LR finder and print the suggested learning rates.

    \b
    Example:
      fastseg lr-find --data data --plot exports/lr_find.png
    """
    from .train import lr_find

    cfg = build_config(config_file, **options)
    result = lr_find(cfg, notify=_notify, plot=plot)
    for name, value in result.suggestions.items():
        click.echo(f"{name:<8} {value:.2e}")
    click.echo(f"suggested learning rate: {result.lr:.2e} (valley)")
    click.echo(f"plot saved to {plot}")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", type=click.Path(file_okay=False), default="predictions", show_default=True,
              help="Folder for the <name>.png masks.")
@click.option("--bs", type=click.IntRange(min=1), default=8, show_default=True, help="Images per batch.")
@click.option("--recursive", is_flag=True, help="Descend into sub-folders of folder inputs.")
def predict(model, inputs, out, bs, recursive):
    """Predict masks for images, folders or glob patterns with an exported model.

    Masks are palette PNGs holding class indices, at each input image's size.

    \b
    Example:
      fastseg predict exports/model.pkl data/images --out predictions/
    """
    from .predict import collect_inputs, load, predict_paths

    predictor = load(model)
    total = len(collect_inputs(inputs, recursive=recursive))
    with click.progressbar(length=total, label="predicting", file=click.get_text_stream("stderr")) as bar:
        report = predict_paths(predictor, inputs, out, bs=bs, recursive=recursive,
                               progress=lambda done, n: bar.update(1))
    for src, why in report.failed:
        click.echo(f"Error: {why}", err=True)
    click.echo(f"wrote {len(report.written)} mask(s) to {out}")
    if report.failed:
        raise SystemExit(1)


@main.command("demo-data")
@click.argument("directory", type=click.Path(file_okay=False), default="data")
@click.option("--n", type=click.IntRange(min=2), default=60, show_default=True, help="Number of images.")
@click.option("--size", type=click.IntRange(min=32), default=128, show_default=True, help="Image side in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Generator seed (same seed, same files).")
def demo_data(directory, n, size, seed):
    """Generate the demo data set: textured shapes on noisy backgrounds, 4 classes.

    \b
    Example:
      fastseg demo-data data/
    """
    from .demo import make_demo_data

    out = make_demo_data(directory, n=n, size=size, seed=seed)
    click.echo(f"wrote {n} images and masks to {out}")
