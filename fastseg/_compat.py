"""Old module paths of fastseg's classes, so models exported before the package was split into stages load.

A fastai ``.pkl`` pickles classes by module path (``fastseg.loaders.ImageForPath``,
``fastseg.images.MaskDecoder``, ...). ``install()`` (run by ``import fastseg``) lets those paths
resolve to the modules' new homes without keeping a stub file per old module. Old paths that are now
packages (``fastseg.train``, ``fastseg.data``) re-export the names old pickles and code use from
their ``__init__``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

__all__ = ["MOVED", "install", "reexport"]

MOVED = {  # old module path -> where it lives now
    "fastseg.layouts": "fastseg.data.layouts",
    "fastseg.images": "fastseg.data.images",
    "fastseg.splits": "fastseg.data.splits",
    "fastseg.check": "fastseg.data.check",
    "fastseg.demo": "fastseg.data.demo",
    "fastseg.annotations": "fastseg.data.annotations",
    "fastseg.loaders": "fastseg.train.loaders",
    "fastseg.augment": "fastseg.train.augment",
    "fastseg.transforms": "fastseg.train.transforms",
    "fastseg.losses": "fastseg.train.losses",
    "fastseg.callbacks": "fastseg.train.callbacks",
    "fastseg.runs": "fastseg.train.runs",
    "fastseg.distributed": "fastseg.train.distributed",
    "fastseg.bundle": "fastseg.export.bundle",
    "fastseg.predict": "fastseg.infer.predictor",
    "fastseg.backends": "fastseg.infer.backends",
    "fastseg.tiling": "fastseg.infer.tiling",
    "fastseg.overlay": "fastseg.infer.overlay",
    "fastseg.evaluate": "fastseg.infer.evaluate",
    "fastseg.plots": "fastseg.report.plots",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module):  # the target module is already executed
        pass


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in MOVED:
            return importlib.util.spec_from_loader(name, _Alias(MOVED[name]))
        return None


def install() -> None:
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        # first: a folder an upgrade left behind (fastseg/annotations/ holding only __pycache__) would
        # otherwise be found as an empty namespace package before the alias
        sys.meta_path.insert(0, _AliasFinder())


def reexport(package: str, target: str):
    """A module ``__getattr__`` for ``package`` (an old flat module, now a stage package) that resolves the names
    old code and exported .pkl files use from ``target``, the module that holds them now, on first use."""

    def __getattr__(name):
        module = importlib.import_module(target)
        try:
            return getattr(module, name)
        except AttributeError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    return __getattr__

