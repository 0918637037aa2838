"""fastseg: image segmentation on fastai with a segmentation_models_pytorch Unet.

The public Python API; the ``fastseg`` command line is a thin layer over these functions.
"""

from . import _compat
from .config import FitConfig
from .errors import ConfigError, DataError, FastsegError, ModelError, WeightsError

__version__ = "0.1.0"

_compat.install()  # models exported before the stage subpackages name their classes by the old module paths

__all__ = [
    "FitConfig", "FastsegError", "DataError", "WeightsError", "ModelError", "ConfigError",
    "fit", "lr_find", "load", "Predictor", "discover", "make_demo_data", "__version__",
    "PredictConfig", "export_model",
]


_LAZY = {  # public name -> the module that defines it
    "fit": "fastseg.pipeline", "lr_find": "fastseg.pipeline", "resume": "fastseg.pipeline",
    "load": "fastseg.infer.predictor", "Predictor": "fastseg.infer.predictor", "PredictConfig": "fastseg.config",
    "export_model": "fastseg.pipeline", "discover": "fastseg.data.dataset",
    "make_demo_data": "fastseg.data.demo", "evaluate": "fastseg.infer.evaluate",
}


def __getattr__(name):
    # Heavy modules (torch, fastai) load on first use, so `import fastseg` and `fastseg --help` stay fast.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fastseg' has no attribute {name!r}")
