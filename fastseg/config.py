"""The one frozen configuration that flows from the CLI (and an optional config file) to the core.

Every default carries the reason for its value. ``FitConfig.from_file`` reads JSON or YAML; the
run folder's ``config.json`` can be fed back to reproduce a run.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError

__all__ = ["FitConfig", "Notify", "silent"]

Notify = Callable[[str], None]
"""A one-argument callable the CLI passes in to show notices; the core never prints."""


def silent(message: str) -> None:
    """The default ``Notify``: drop the message (library use)."""


WEIGHT_CHOICES = ("imagenet", "none")
CACHE_CHOICES = ("auto", "ram", "none")


@dataclass(frozen=True)
class FitConfig:
    data: str = "data"  # the embedded demo set, so `fastseg fit` works out of the box
    epochs: int = 25  # the reference run's length; enough for the demo set to converge from scratch
    lr: float | str = "auto"  # "auto" runs the LR finder and takes its valley suggestion
    bs: int | str = 8  # fits a 256 px Unet-b0 on CPU RAM and any GPU; small sets still get several steps
    size: int | None = None  # None: min(256, smallest image side) rounded down to a multiple of 32
    encoder: str = "timm-efficientnet-b0"  # small, fast, strong ImageNet encoder (the reference run)
    weights: str = "imagenet"  # pretrained encoders converge faster; "none" or a local file also work
    valid_pct: float = 0.2  # used only when the data set has no split of its own
    seed: int = 42  # same seed, same split and same initialisation
    export: str = "exports/model.pkl"  # the deployable fastai learner
    lr_find_iters: int = 60  # enough points for a stable valley; the finder stops early on divergence
    num_workers: int | str = "auto"  # auto: 0 on CPU with <= 4 cores (the model needs them), cores-1 (max 8) on CUDA
    cache: str = "auto"  # auto: keep decoded images in RAM when they need <= 25% of free RAM (decode once, not per epoch)
    compile: bool = False  # off: compiling takes minutes, which short and CPU runs never win back (unmeasured on GPU)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        if self.bs != "auto" and not (isinstance(self.bs, int) and self.bs >= 1):
            raise ConfigError(f"bs (batch size) must be 'auto' or at least 1, got {self.bs!r}")
        if self.size is not None and (self.size < 32 or self.size % 32):
            raise ConfigError(f"size must be a multiple of 32 (the Unet downsamples 5 times), got {self.size}")
        if not 0.0 < self.valid_pct < 1.0:
            raise ConfigError(f"valid_pct must be between 0 and 1 (exclusive), got {self.valid_pct}")
        if self.lr != "auto":
            try:
                lr = float(self.lr)
            except (TypeError, ValueError):
                raise ConfigError(f"lr must be 'auto' or a positive number, got {self.lr!r}") from None
            if not lr > 0:
                raise ConfigError(f"lr must be 'auto' or a positive number, got {self.lr!r}")
            object.__setattr__(self, "lr", lr)
        if self.lr_find_iters < 10:
            raise ConfigError(f"lr_find_iters must be at least 10, got {self.lr_find_iters}")
        if self.num_workers != "auto" and not (isinstance(self.num_workers, int) and self.num_workers >= 0):
            raise ConfigError(f"num_workers must be 'auto' or 0 or more, got {self.num_workers!r}")
        if self.cache not in CACHE_CHOICES:
            raise ConfigError(f"cache must be one of {', '.join(CACHE_CHOICES)}, got {self.cache!r}")

    @property
    def weights_is_file(self) -> bool:
        return self.weights not in WEIGHT_CHOICES

    def replace(self, **changes: Any) -> "FitConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "FitConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(names))}")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> "FitConfig":
        """Read a JSON or YAML file of options; ``overrides`` (the CLI's) win."""
        values = read_config_file(path)
        values.update(overrides)
        return cls.from_dict(values, source=str(path))


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text)
        else:
            values = json.loads(text)
    except Exception as e:  # both parsers raise their own error types
        raise ConfigError(f"{path}: not valid {'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'JSON'} ({e})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values")
    return {k.replace("-", "_"): v for k, v in values.items()}
