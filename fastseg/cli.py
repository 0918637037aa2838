"""The ``fastseg`` command line: click only. Options -> FitConfig -> core call -> printed result.

Every ``FastsegError`` from the core becomes one ``Error: ...`` line and exit code 1.
"""

from __future__ import annotations

import warnings

import click

from .config import (ARCH_CHOICES, BACKEND_CHOICES, CACHE_CHOICES, DEMO_IMAGES, DEMO_SEED, DEMO_SIZE, DEVICE_HINT,
                     EVAL_BS, EVAL_SPLIT, EXPORT_FORMAT_CHOICES, FORMAT_CHOICES, LOG_CHOICES, SPLIT_CHOICES,
                     WEIGHT_CHOICES, FitConfig, PredictConfig)
from .constants import IGNORE_INDEX, STRIDE
from .errors import FastsegError, Interrupted

DEFAULTS = FitConfig()
PREDICT_DEFAULTS = PredictConfig()
PRELABEL_HINTS = {"coco": "COCO instances with RLE masks: import as 'COCO 1.0' in CVAT or any COCO tool",
                  "cvat": "import in CVAT as 'Segmentation mask 1.1'"}


class InterruptedExit(click.ClickException):
    """Ctrl-C: one line saying what was saved, and the shell's exit code for SIGINT."""

    exit_code = 130  # 128 + SIGINT

    def show(self, file=None) -> None:
        click.echo(err=True)  # end the line a progress bar was drawing
        super().show(file)


class FastsegGroup(click.Group):
    """A click group that turns the core's FastsegError into a one-line ClickException."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Interrupted as e:
            raise InterruptedExit(str(e)) from None
        except FastsegError as e:
            raise click.ClickException(str(e)) from None


def describe_choices(choices: tuple[str, ...], meaning: dict[str, str]) -> str:
    """``a: ...; b: ...`` in the config's order, so help text follows the choice list defined in fastseg.config."""
    if set(meaning) != set(choices):
        raise ValueError(f"help describes {sorted(meaning)} but the choices are {list(choices)}")
    return "; ".join(f"{c}: {meaning[c]}" for c in choices)


def flag_default(name: str, on: bool) -> str:
    """A --NAME/--no-NAME flag's default as click prints it."""
    return name if on else f"no-{name}"


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


def _with_options(f, opts: list):
    """``f`` decorated with ``opts``, shown in --help in list order."""
    for opt in reversed(opts):
        f = opt(f)
    return f


def data_model_options(f):
    """Options shared by every command that builds data and a model (fit, lr-find)."""
    opts = [
        click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
                     help="JSON/YAML file of options; options given here override it."),
        click.option("--data", type=click.Path(), help=f"Data folder with images/ and masks/.  [default: {DEFAULTS.data}]"),
        click.option("--bs", type=AutoOrInt(1),
                     help="Batch size, or 'auto': on a GPU the fastest measured, on a CPU the largest that fits "
                          f"(printed).  [default: {DEFAULTS.bs}]"),
        click.option("--size", type=click.IntRange(min=STRIDE),
                     help=f"Training crop side, a multiple of {STRIDE}.  [default: min(256, smallest image side)]"),
        click.option("--arch", metavar="ARCH",
                     help=f"SMP architecture: {', '.join(ARCH_CHOICES)} (any case).  [default: {DEFAULTS.arch}]"),
        click.option("--encoder", help=f"SMP encoder name, or tu-<timm model> (timm's own ImageNet weights with --weights imagenet).  "
                                       f"[default: {DEFAULTS.encoder}]"),
        click.option("--weights", help=f"Encoder weights: {', '.join(WEIGHT_CHOICES)}, or a .pth/.safetensors file.  "
                                       f"[default: {DEFAULTS.weights}]"),
        click.option("--valid-pct", type=float, help=f"Validation share when the data has no split.  [default: {DEFAULTS.valid_pct}]"),
        click.option("--seed", type=int, help=f"Random seed (split, initialisation, augmentation).  [default: {DEFAULTS.seed}]"),
        click.option("--device", help=f"Where to train: {DEVICE_HINT}; auto is CUDA, then Apple MPS, then the CPU "
                                      f"(printed in the plan).  [default: {DEFAULTS.device}]"),
    ]
    return _with_options(f, opts)


def layout_options(f):
    """Options that say how to read a data folder (fit, lr-find, check)."""
    from .config import LAYOUT_CHOICES

    opts = [
        click.option("--layout", type=click.Choice(LAYOUT_CHOICES),
                     help=f"Data layout; auto detects it from the folders present.  [default: {DEFAULTS.layout}]"),
        click.option("--colors", type=click.Path(exists=True, dir_okay=False),
                     help="Colour table (name,r,g,b per line) for RGB colour masks.  [default: DATA/codes.csv if present]"),
        click.option("--void", help="Class name to ignore in loss and metrics.  [default: a class named void/unlabelled]"),
        click.option("--ignore-index", type=click.IntRange(0, 255),
                     help=f"Mask value to ignore in loss and metrics.  [default: {IGNORE_INDEX}]"),
    ]
    return _with_options(f, opts)


def training_options(f):
    """Options of ``fit`` only: the run folder, resuming, recipe, loss, augmentation, precision."""
    from .config import AUG_CHOICES, LOSS_CHOICES, PRECISION_CHOICES, PROGRESSIVE_CHOICES

    opts = [
        click.option("--name", help="Run folder name under --runs-dir (never overwritten).  [default: a timestamp]"),
        click.option("--runs-dir", type=click.Path(file_okay=False), help=f"Where run folders go.  [default: {DEFAULTS.runs_dir}]"),
        click.option("--resume", type=click.Path(exists=True, file_okay=False),
                     help="Continue the run in this folder from its last completed epoch."),
        click.option("--patience", type=click.IntRange(min=1), help="Stop after N epochs without a better valid mIoU.  [default: off]"),
        click.option("--freeze-epochs", type=click.IntRange(min=0),
                     help=f"Pretrained encoders: epochs with a frozen encoder first.  [default: {DEFAULTS.freeze_epochs}]"),
        click.option("--loss", type=click.Choice(LOSS_CHOICES), help=f"Training loss.  [default: {DEFAULTS.loss}]"),
        click.option("--class-weights", help="Comma-separated weight per class, in codes order (e.g. 1,5).  [default: equal]"),
        click.option("--aug", type=click.Choice(AUG_CHOICES),
                     help="Augmentation; " + describe_choices(AUG_CHOICES, {
                         "auto": "full for runs of >= 1000 optimiser steps, else none (printed)",
                         "full": "flips, rotation, zoom, lighting, warp", "flips": "the 8 exact flips/90-degree turns",
                         "none": "off"}) + f".  [default: {DEFAULTS.aug}]"),
        click.option("--no-aug", is_flag=True, default=None, help="Same as --aug none."),
        click.option("--progressive", type=click.Choice(PROGRESSIVE_CHOICES),
                     help="Progressive resizing: the first 65% of the epochs on half-size crops (4 per image, "
                          "so an epoch covers as many pixels), then full size at LR/4; validation always at full size. "
                          f"auto: on when images are at least twice the crop side (printed).  [default: {DEFAULTS.progressive}]"),
        click.option("--grad-clip", type=click.FloatRange(min=0),
                     help=f"Clip each step's gradient norm to this; 0: off.  [default: {DEFAULTS.grad_clip}]"),
        click.option("--precision", type=click.Choice(PRECISION_CHOICES),
                     help="Training precision (exports are always fp32); " + describe_choices(PRECISION_CHOICES, {
                         "auto": "bf16 on GPUs that have it (else fp16), on CPU bf16 only if a timed step here is "
                                 "faster (printed)",
                         "fp32": "full precision", "bf16": "autocast; CPU or GPU", "fp16": "GPU, loss scaling"})
                     + f".  [default: {DEFAULTS.precision}]"),
        click.option("--fp16/--no-fp16", default=None, hidden=True,
                     help="Before --precision: --fp16 is --precision auto, --no-fp16 is --precision fp32."),
    ]
    return _with_options(f, opts)


def speed_options(f):
    """Device and speed options (fit, lr-find): DataLoader workers, RAM cache, torch.compile."""
    opts = [
        click.option("--num-workers", type=AutoOrInt(0),
                     help=f"DataLoader worker processes, or 'auto' (0 on CPUs with <= 4 cores).  [default: {DEFAULTS.num_workers}]"),
        click.option("--cache", type=click.Choice(CACHE_CHOICES),
                     help="Keep decoded images in RAM; " + describe_choices(CACHE_CHOICES, {
                         "auto": "when they fit", "ram": "always", "none": "never (decode every epoch)"})
                     + f".  [default: {DEFAULTS.cache}]"),
        click.option("--compile/--no-compile", "compile", default=None,
                     help="Train through torch.compile (GPU runs; slower to start).  "
                          f"[default: {flag_default('compile', DEFAULTS.compile)}]"),
    ]
    return _with_options(f, opts)


def postprocess_options(f):
    """Mask clean-up after the argmax (predict, evaluate): ``fastseg.infer.postprocess``."""
    opts = [
        click.option("--min-area", type=click.IntRange(min=0), default=PREDICT_DEFAULTS.min_area, show_default=True,
                     help="Regions of any class smaller than N pixels take the class of most of their surroundings "
                          "(8-connected; 0: off)."),
        click.option("--fill-holes", is_flag=True,
                     help="Background (the first class) enclosed by a region of another class becomes that class; "
                          "regions of other classes inside stay."),
    ]
    return _with_options(f, opts)


def _parse_classes(value: str | None) -> list[str] | None:
    """``--classes a,b,c`` -> ["a", "b", "c"]."""
    if value is None:
        return None
    names = [c.strip() for c in value.split(",")]
    if not all(names):
        raise click.BadParameter(f"'{value}' is not a comma-separated list of class names", param_hint="--classes")
    return names


CLASSES_HELP = "Class names (a,b,c) of a model folder written by SMP's save_pretrained, which has none of its own."


def build_config(config_file: str | None, **options) -> FitConfig:
    """The CLI's options (only those given) over the config file's over the defaults."""
    if options.pop("no_aug", None):
        options["aug"] = "none"
    fp16 = options.pop("fp16", None)  # the flag before --precision (see FitConfig's legacy_precision)
    if fp16 is not None and options.get("precision") is None:
        options["precision"] = "auto" if fp16 else "fp32"
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
    """fastseg: train, evaluate and deploy image segmentation models (fastai + SMP: Unet, FPN, DeepLabV3+, ...).

    \b
    Example (quick start):
      fastseg fit --epochs 25              # train on ./data, export exports/model.pkl
      fastseg predict exports/model.pkl photos/ --out predictions/
    """
    _quiet_library_warnings()


@main.command()
@data_model_options
@layout_options
@speed_options
@click.option("--epochs", type=click.IntRange(min=1), help=f"Training epochs.  [default: {DEFAULTS.epochs}]")
@click.option("--time", help="Wall-clock budget for the whole run instead of --epochs (e.g. 10m, 1h30m): the plan "
                             "measures a training step here and picks the epochs that fill it.")
@click.option("--dry-run", is_flag=True, help="Print the plan (every automatic choice and its reason) and exit.")
@click.option("--lr", help=f"Peak learning rate, or 'auto' to use the LR finder's suggestion.  [default: {DEFAULTS.lr}]")
@click.option("--export", type=click.Path(dir_okay=False),
              help="Where to copy the run's model (.pkl, and its safe bundle beside it: model.pkl -> model/); "
                   f"the run folder keeps its own.  [default: {DEFAULTS.export}]")
@click.option("--sync-bn/--no-sync-bn", default=None,
              help="Multi-GPU (torchrun / accelerate launch): BatchNorm synced across GPUs.  "
                   f"[default: {flag_default('sync-bn', DEFAULTS.sync_bn)}]")
@training_options
@click.option("--log", "log", multiple=True, type=click.Choice(LOG_CHOICES),
              help="Also track the run with this experiment tracker (repeatable; each needs "
                   f"pip install 'fastseg[NAME]').  [default: {', '.join(DEFAULTS.log) or 'none'}]")
@click.option("--quiet", "-q", is_flag=True, help="Print only warnings, errors and the final summary.")
@click.option("--json", "as_json", is_flag=True, help="Print the final result as one JSON object on stdout "
                                                      "(notices and epoch lines go to stderr).")
def fit(config_file, lr, resume, quiet, as_json, dry_run, **options):
    """Train a segmentation model (a Unet unless --arch says otherwise) on a folder of images and masks, then export it.

    Each run writes runs/<name>/: config.json, history.csv, metrics.json, plots, the best.pth /
    last.pth checkpoints and its model (model.pkl + model/) with the best epoch's weights (by valid
    mIoU); --export gets a copy. Ctrl-C, a kill or a full disk leave a run that --resume continues
    (or finishes, when every epoch is trained).

    \b
    Example:
      fastseg fit --epochs 25
      fastseg fit --data ~/datasets/cells --time 10m       # epochs planned to fill 10 minutes
      fastseg fit --data ~/datasets/cells --dry-run        # show the plan, train nothing
      fastseg fit --data ~/datasets/cells --size 256 --weights none --lr 3e-3 --name cells
      fastseg fit --arch DeepLabV3Plus --encoder resnet34   # any SMP architecture and encoder
      torchrun --nproc_per_node 4 -m fastseg fit --data ~/datasets/cells --bs 8   # 4 GPUs, DDP
      fastseg fit --resume runs/cells          # continue after a crash, Ctrl-C or kill -9
      fastseg fit --config runs/cells/config.json   # reproduce a run
      fastseg fit --data ~/datasets/cells --bs auto --cache ram
      fastseg fit --epochs 25 --log tensorboard --log mlflow   # also track the run
      nohup fastseg fit --epochs 25 > fit.log &   # not a terminal: one line per epoch, no progress bars
      fastseg fit --epochs 25 --json > result.json

    The run ends with runs/<name>/report.html: scores, curves, the worst validation images and the
    commands to resume, evaluate, predict and export (rebuild it with `fastseg report`).
    """
    from .pipeline import fit as run_fit
    from .pipeline import plan_fit
    from .pipeline import resume as run_resume
    from .train.distributed import is_main_process

    options["log"] = options["log"] or None  # none given: the config file's (or the default) list
    if options["time"] is not None and options["epochs"] is not None:
        raise click.UsageError("--time and --epochs are exclusive: --time plans the epochs to fill the budget")
    notify, progress = _fit_output(quiet, as_json)
    if resume is not None:
        _refuse_with_resume(options, config_file=config_file, lr=lr, dry_run=dry_run)
        result = run_resume(resume, notify=notify, progress=progress, export=options["export"])
    else:
        cfg = build_config(config_file, lr=_parse_lr(lr), **options)
        if dry_run:
            click.echo(plan_fit(cfg, notify=notify).table())
            return
        result = run_fit(cfg, notify=notify, progress=progress)
    if is_main_process():  # DDP: rank 0 reports for all ranks
        _echo_fit_result(result, as_json)


def _refuse_with_resume(options: dict, config_file, lr, dry_run: bool) -> None:
    """--resume takes the run's own config.json: any option given beside it (but --export) is a usage error."""
    given = sorted(k for k, v in options.items() if v is not None and k != "export") \
        + (["config"] if config_file else []) + (["lr"] if lr is not None else []) + (["dry-run"] if dry_run else [])
    if given:
        raise click.UsageError(f"--resume continues with the run's own config.json; drop --{', --'.join(given)}")


def _echo_fit_result(result, as_json: bool) -> None:
    """The samples each rank saw (multi-GPU), then the result as JSON or as the summary lines."""
    if result.ranks is not None:
        click.echo(f"samples per rank: train {'+'.join(map(str, result.ranks.train))}, "
                   f"valid {'+'.join(map(str, result.ranks.valid))} (last epoch)", err=as_json)
    if as_json:
        import json

        from .train.runs import _jsonable

        click.echo(json.dumps(_fit_json(result), default=_jsonable))
        return
    _echo_fit_summary(result)


def _fit_output(quiet: bool, as_json: bool):
    """(notify, progress bars?): bars only on a terminal; --quiet keeps warnings; --json sends notices to stderr."""
    import sys

    if quiet:
        return (lambda m: click.echo(m, err=True) if m.startswith("Warning") else None), False
    if as_json:
        return (lambda m: click.echo(m, err=True)), False
    return _notify, sys.stdout.isatty()


def _fit_json(result) -> dict:
    """The final result of ``fit --json``: where things are, and the scores (centre crops and full images)."""
    out = result.outputs
    return {"export": str(result.export), "run": str(result.run), "best_epoch": result.best_epoch,
            "epochs_run": len(result.history), "stopped_early": result.stopped_early, "lr": result.lr,
            "lr_source": result.lr_source, "metrics": result.metrics,
            "full_resolution": out.scores if out is not None else None,
            "report": str(out.report) if out is not None else None,
            "files": [str(f) for f in out.files] if out is not None else []}


def _echo_fit_summary(result) -> None:
    m = result.metrics
    click.echo(f"\nbest epoch {result.best_epoch}{' (stopped early)' if result.stopped_early else ''}")
    click.echo(f"valid mIoU {m['miou']:.4f}  Dice {m['dice']:.4f}  pixel accuracy {m['pixel_accuracy']:.4f}")
    for name, s in m["per_class"].items():
        iou = "   n/a" if s["iou"] is None else f"{s['iou']:.4f}"
        click.echo(f"  {name:<20} IoU {iou}")
    full = result.outputs.scores if result.outputs is not None else None
    if full is not None and abs(full["miou"] - m["miou"]) > 5e-5:  # validation during training scores centre crops
        click.echo(f"valid mIoU on whole images {full['miou']:.4f}  Dice {full['dice']:.4f} "
                   f"(the best epoch was picked on centre crops; per_image.csv has each image)")
    click.echo(f"exported {result.export}")
    click.echo(f"run folder {result.run} (its own copy of the model: {result.model})")
    if result.outputs is not None:
        click.echo(f"report {result.outputs.report}")


@main.command("lr-find")
@data_model_options
@layout_options
@speed_options
@click.option("--plot", type=click.Path(dir_okay=False), default="exports/lr_find.png", show_default=True,
              help="Where to save the loss-vs-learning-rate plot.")
def lr_find_cmd(config_file, plot, **options):
    """Run the LR finder and print the suggested learning rates.

    \b
    Example:
      fastseg lr-find --data data --plot exports/lr_find.png
    """
    from .pipeline import lr_find

    cfg = build_config(config_file, **options)
    result = lr_find(cfg, notify=_notify, plot=plot)
    for name, value in result.suggestions.items():
        click.echo(f"{name:<8} {value:.2e}")
    click.echo(f"suggested learning rate: {result.lr:.2e} (minimum: the loss minimum's LR / 10)")
    click.echo(f"plot saved to {plot}")


@main.command()
@click.argument("model", type=click.Path())
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", type=click.Path(file_okay=False), default="predictions", show_default=True,
              help="Folder for the <name>.png masks.")
@click.option("--bs", type=click.IntRange(min=1), default=PREDICT_DEFAULTS.bs, show_default=True,
              help="Images (or tiles) per batch.")
@click.option("--recursive", is_flag=True, help="Descend into sub-folders of folder inputs.")
@click.option("--overlay", is_flag=True, help="Also write <name>_overlay.jpg: the image tinted by class, with a legend.")
@click.option("--probs", is_flag=True, help="Also write <name>_probs.npy: C x H x W float16 class probabilities.")
@click.option("--tile", type=click.IntRange(min=STRIDE),
              help=f"Sliding-window tile side (multiple of {STRIDE}) for large images; also opens slides over PIL's "
                   "179-megapixel limit.")
@click.option("--overlap", type=click.FloatRange(0, 1, max_open=True), default=PREDICT_DEFAULTS.overlap, show_default=True,
              help="Overlap share between tiles (with --tile).")
@click.option("--tta", is_flag=True, help="Average predictions over horizontal and vertical flips (3x the compute).")
@click.option("--workers", type=AutoOrInt(0), default=PREDICT_DEFAULTS.workers, show_default=True,
              help="Image-decoding worker processes, or auto (none on CPUs with <= 4 cores, where the model "
                   "needs every core; else as for fit's --num-workers).")
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), default=PREDICT_DEFAULTS.backend, show_default=True,
              help="Inference engine (the choice and its reason are printed); " + describe_choices(BACKEND_CHOICES, {
                  "auto": "on CPU the fastest here (a short probe) of those whose masks match fp32 on >= 99.5% of "
                          "the model's validation pixels; torch on GPUs",
                  "torch": "fp32", "torch-bf16": "torch in bf16", "onnx": "ONNX Runtime fp32",
                  "onnx-int8": "needs `fastseg export --int8`", "openvino": "OpenVINO"}) + ".")
@click.option("--format", "format", type=click.Choice(FORMAT_CHOICES), default=PREDICT_DEFAULTS.format,
              show_default=True, help="What to write (pre-annotations are to correct in a labelling tool); "
              + describe_choices(FORMAT_CHOICES, {
                  "png": "<name>.png class-index masks",
                  "coco": "pre-annotations, annotations/instances_default.json (RLE, one annotation per region)",
                  "cvat": "pre-annotations, segmentation_mask.zip (CVAT 'Segmentation mask 1.1')"}) + ".")
@postprocess_options
@click.option("--classes", help=CLASSES_HELP)
def predict(model, inputs, out, recursive, classes, **options):
    """Predict masks for images, folders or glob patterns with a fastseg model.

    MODEL is a fastai .pkl, a safe bundle folder (fastseg.json + model.safetensors), an .onnx or a
    TorchScript .pt file; all give the same masks. Masks are palette PNGs holding class indices, at
    each input image's size.

    Before any inference, every output is checked: none may replace an input, the model, or a file in
    --out that fastseg did not write or that changed since (a mask corrected by hand). fastseg records
    what it wrote in --out/.fastseg-predict.jsonl, so re-running into the same folder is fine.

    \b
    Example:
      fastseg predict exports/model.pkl data/images --out predictions/
      fastseg predict exports/model "scans/*.tif" --tile 512 --tta --overlay
      fastseg predict exports/model.pkl unlabelled/ --format cvat --out prelabels/   # correct in CVAT, retrain
      fastseg predict exports/model scans/ --min-area 50 --fill-holes   # no specks, no pinholes
      fastseg predict smp_folder/ photos/ --classes background,road,car   # a model saved by SMP's save_pretrained
    """
    from .infer.outputs import prepare_outputs
    from .infer.postprocess import describe
    from .infer.predictor import collect_inputs, load, write_predictions

    cfg = PredictConfig(**options)
    predictor = load(model, backend=cfg.backend, notify=_notify, classes=_parse_classes(classes))
    items = collect_inputs(inputs, recursive=recursive)
    folder = prepare_outputs(items, out, cfg, model=model)  # before any inference: nothing the user has is replaced
    click.echo(f"backend: {predictor.backend_note}", err=True)
    if cfg.postprocess:
        click.echo(f"post-processing: {describe(cfg.min_area, cfg.fill_holes)}", err=True)
    with click.progressbar(length=len(items), label="predicting", file=click.get_text_stream("stderr")) as bar:
        report = write_predictions(predictor, items, folder, cfg, progress=lambda done, n: bar.update(1))
    for src, why in report.failed:
        click.echo(f"Error: {why}", err=True)
    n_ok = len(items) - len(report.failed)
    if cfg.format == "png":
        click.echo(f"wrote {n_ok} mask(s) to {out}")
    else:
        click.echo(f"wrote {n_ok} pre-annotated image(s) to {report.written[-1]} ({PRELABEL_HINTS[cfg.format]})")
    if report.failed:
        raise SystemExit(1)


@main.command("export")
@click.argument("model", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMAT_CHOICES), required=True,
              help=describe_choices(EXPORT_FORMAT_CHOICES, {
                  "safetensors": "safe bundle folder", "onnx": "ONNX Runtime / any ONNX runtime",
                  "torchscript": ".pt"}) + ".")
@click.option("--out", type=click.Path(), help="Destination.  [default: beside MODEL: model/, model.onnx, model.pt]")
@click.option("--force", is_flag=True, help="Overwrite an existing destination.")
@click.option("--int8", is_flag=True,
              help="ONNX only: statically quantised int8 model (default out: model.int8.onnx, which `fastseg predict "
                   "MODEL` then considers), calibrated on the model's training images; its agreement with fp32 is printed.")
@click.option("--calib", type=click.Path(exists=True, file_okay=False),
              help="With --int8: calibrate (and check agreement) on this folder's images instead of the training data.")
@click.option("--classes", help=CLASSES_HELP)
def export_cmd(model, fmt, out, force, int8, calib, classes):
    """Convert a fastseg model (.pkl or bundle) to a safe bundle, ONNX or TorchScript.

    ONNX exports have dynamic batch/height/width and are checked against torch in onnxruntime
    before they are written (max |diff| < 1e-3).

    \b
    Example:
      fastseg export exports/model.pkl --format onnx
      fastseg export exports/model.pkl --format safetensors --out exports/safe --force
    """
    from .pipeline import export_model

    res = export_model(model, fmt, out=out, force=force, int8=int8, calib=calib, notify=_notify,
                       classes=_parse_classes(classes))
    if res.quantization is not None:
        from .infer.backends import AGREEMENT_MIN

        q = res.quantization
        click.echo(f"int8: {q['agreement']:.2%} of pixels as fp32 on {q['agreement_images']} validation image(s); "
                   f"calibrated on {q['calibration']}")
        if q["agreement"] < AGREEMENT_MIN:
            click.echo(f"Warning: under {AGREEMENT_MIN:.1%}: fastseg predict's auto backend will not use it "
                       "(--backend onnx-int8 forces it)", err=True)
    elif res.format == "onnx":
        click.echo(f"onnxruntime check: max |diff| vs torch {res.max_diff:.1e} (opset {res.opset})")
    click.echo(f"exported {res.path}")


@main.command("demo-data")
@click.argument("directory", type=click.Path(file_okay=False), default=DEFAULTS.data)
@click.option("--n", type=click.IntRange(min=2), default=DEMO_IMAGES, show_default=True, help="Number of images.")
@click.option("--size", type=click.IntRange(min=STRIDE), default=DEMO_SIZE, show_default=True,
              help="Image side in pixels.")
@click.option("--seed", type=int, default=DEMO_SEED, show_default=True, help="Generator seed (same seed, same files).")
@click.option("--force", is_flag=True, help="Write into a folder that is not empty (replaces codes.txt and valid.txt).")
def demo_data(directory, n, size, seed, force):
    """Generate the demo data set: textured shapes on noisy backgrounds, 4 classes.

    DIRECTORY must be new or empty unless --force is given.

    \b
    Example:
      fastseg demo-data data/
    """
    from .data.demo import make_demo_data

    out = make_demo_data(directory, n=n, size=size, seed=seed, force=force)
    click.echo(f"wrote {n} images and masks to {out}")


@main.command("check")
@click.argument("data", type=click.Path(), default=DEFAULTS.data)
@layout_options
@click.option("--valid-pct", type=float, default=DEFAULTS.valid_pct, show_default=True,
              help="Validation share when the data has no split.")
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True, help="Random seed of that split.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check_cmd(data, as_json, **options):
    """Check a data folder without changing it: layout, splits, classes, mapping, problems.

    Exits 0 when fastseg can train on the folder, 1 otherwise.

    \b
    Example:
      fastseg check data/
      fastseg check ~/datasets/VOC2012 --json
    """
    import json

    from .data.check import check

    report = check(data, **{k: v for k, v in options.items() if v is not None})
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        if report.layout:
            click.echo(f"layout    {report.layout}  ({report.root})")
            click.echo("images    " + ", ".join(f"{n} {s}" for s, n in report.counts.items())
                       + f"  (split: {report.split_source})")
            click.echo(f"channels  {_channels_line(report)}")
            click.echo(f"classes   {len([c for c in report.classes if c.index is not None])}"
                       f"  (smallest image side {report.min_side} px)")
            for c in report.classes:
                flag = "  absent from train" if c.index is not None and not c.train_pixels else ""
                click.echo(f"  {'' if c.index is None else c.index:>3} {c.name:<20} {c.share:8.2%}{flag}")
            for m in report.mapping:
                click.echo(f"mapping   {m}")
            click.echo(f"void      {report.void or 'none'}")
        for w in report.warnings:
            click.echo(w, err=True)
        for p in report.problems:
            click.echo(f"Error: {p}", err=True)
        click.echo(f"{'OK: trainable' if report.ok else f'NOT trainable: {len(report.problems)} problem(s)'}"
                   f" ({report.seconds:.2f} s)")
    if not report.ok:
        raise SystemExit(1)


def _channels_line(report) -> str:
    """``fastseg check``'s channels line: the model's input channels, the stored types, the normalisation."""
    if report.stats is None:
        return f"{report.channels}, {report.dtype} (8-bit images read as RGB; ImageNet mean/std)"
    mean, std = (" ".join(f"{v:.3g}" for v in report.stats[k]) for k in ("mean", "std"))
    return f"{report.channels}, {report.dtype} (every channel as stored; training-set mean {mean}, std {std})"


@main.command()
@click.argument("model", type=click.Path())
@click.option("--data", type=click.Path(), default=DEFAULTS.data, show_default=True,
              help="Data folder with images/ and masks/ (labelled like the training data).")
@click.option("--split", type=click.Choice(SPLIT_CHOICES), default=EVAL_SPLIT, show_default=True,
              help=describe_choices(SPLIT_CHOICES, {
                  "valid": "the training split's validation images",
                  "test": "the layout's test split and test.txt's images (never trained on)",
                  "all": "every image"}) + ".")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON instead of a table.")
@click.option("--plot", type=click.Path(dir_okay=False), default="exports/confusion.png", show_default=True,
              help="Where to save the confusion-matrix plot.")
@click.option("--bs", type=click.IntRange(min=1), default=EVAL_BS, show_default=True, help="Images per batch.")
@click.option("--per-image", is_flag=True,
              help="Also write per_image.csv and per_image.json: per-class IoU, Dice and pixel counts of every image.")
@click.option("--worst", type=click.IntRange(min=1),
              help="Also save worst.png: the K lowest-mIoU images (image | truth | prediction | errors); implies --per-image.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for the --per-image / --worst files.  [default: the --plot file's folder]")
@postprocess_options
@click.option("--classes", help=CLASSES_HELP)
def evaluate(model, as_json, **options):
    """Score an exported model (bundle folder, .onnx, TorchScript .pt or .pkl) on labelled images at full resolution.

    Per-class IoU, Dice and pixel share, mIoU and pixel accuracy, from one confusion matrix over
    all the images (void pixels ignored). Images are padded to a multiple of 32 and cropped back.

    \b
    Example:
      fastseg evaluate exports/model --data data
      fastseg evaluate exports/model.pkl --data my-data --split all --json
      fastseg evaluate exports/model.pkl --data data --per-image --worst 8   # where does it fail?
      fastseg evaluate exports/model --data data --min-area 50 --fill-holes   # what post-processing changes
    """
    import json

    result, post = _run_evaluate(model, options)
    s, raw = result.scores, result.raw_scores
    if as_json:
        extra = {} if raw is None else {"postprocess": {"min_area": post.min_area, "fill_holes": post.fill_holes},
                                        "before_postprocess": raw}
        click.echo(json.dumps({**s, **extra}, indent=2))
        for f in result.files:
            click.echo(f"wrote {f}", err=True)
        return
    click.echo(f"{result.n_images} image(s), split {options['split']}")
    _echo_scores(s, raw, post)
    click.echo(f"confusion matrix saved to {result.plot}")
    if result.files:
        _echo_worst(result.per_image, options["worst"] or 0)
        click.echo(f"per-image scores saved to {', '.join(str(f) for f in result.files)}")


def _run_evaluate(model, options: dict):
    """The core evaluation for ``fastseg evaluate``'s options, and the post-processing it applied."""
    from pathlib import Path

    from .infer.evaluate import evaluate as run_evaluate

    o = options
    details = (o["out"] or str(Path(o["plot"]).parent)) if o["per_image"] or o["worst"] else None
    post = PredictConfig(bs=o["bs"], min_area=o["min_area"], fill_holes=o["fill_holes"])
    result = run_evaluate(model, o["data"], split=o["split"], plot=o["plot"], bs=o["bs"], details=details,
                          worst=o["worst"] or 0, notify=_notify, post=post, classes=_parse_classes(o["classes"]))
    return result, post


def _echo_scores(s: dict, raw: dict | None, post: PredictConfig) -> None:
    """The per-class table and the overall scores; with post-processing, the model's own scores too."""
    from .infer.postprocess import describe

    total = sum(c["support"] for c in s["per_class"].values()) or 1
    if raw is not None:
        click.echo(f"scores after post-processing ({describe(post.min_area, post.fill_holes)}):")
    click.echo(f"{'class':<20} {'IoU':>7} {'Dice':>7} {'pixels':>7}")
    for name, c in s["per_class"].items():
        iou = "    n/a" if c["iou"] is None else f"{c['iou']:7.4f}"
        dice = "    n/a" if c["dice"] is None else f"{c['dice']:7.4f}"
        click.echo(f"{name:<20} {iou} {dice} {c['support'] / total:7.2%}")
    click.echo(f"mIoU {s['miou']:.4f}  Dice {s['dice']:.4f}  pixel accuracy {s['pixel_accuracy']:.4f}")
    if raw is not None:
        click.echo(f"before post-processing: mIoU {raw['miou']:.4f}  Dice {raw['dice']:.4f}  "
                   f"pixel accuracy {raw['pixel_accuracy']:.4f}")


def _echo_worst(images, k: int) -> None:
    """The K worst images by mIoU, one line each (what worst.png shows)."""
    from .infer.per_image import worst_indices

    for i in worst_indices(images.rows, k):
        r = images.rows[i]
        miou = "n/a" if r["miou"] is None else f"{r['miou']:.4f}"
        click.echo(f"  worst: {r['image']:<30} mIoU {miou}")


@main.command("report")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
def report_cmd(run):
    """Rebuild RUN/report.html from the run folder's files (also for a run that has not finished).

    One self-contained page to open in a browser: scores per class, the worst validation images,
    curves, confusion matrix, samples, LR finder, timings, config, environment, and the commands
    to resume, evaluate, predict and export the model.

    \b
    Example:
      fastseg report runs/cells
    """
    from .report.html import write_report

    click.echo(f"wrote {write_report(run)}")
