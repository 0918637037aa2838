"""fastseg: image segmentation on fastai with a segmentation_models_pytorch Unet.

The public Python API; the ``fastseg`` command line is a thin layer over these functions.
"""

from .config import FitConfig
from .errors import ConfigError, DataError, FastsegError, ModelError, WeightsError

__version__ = "0.1.0"

__all__ = [
    "FitConfig", "FastsegError", "DataError", "WeightsError", "ModelError", "ConfigError",
    "fit", "lr_find", "load", "Predictor", "discover", "make_demo_data", "__version__",
    "PredictConfig", "export_model",
]


def __getattr__(name):
    # Heavy modules (torch, fastai) load on first use, so `import fastseg` and `fastseg --help` stay fast.
    if name in ("fit", "lr_find"):
        from . import train

        return getattr(train, name)
    if name in ("load", "Predictor"):
        from . import predict

        return getattr(predict, name)
    if name == "PredictConfig":
        from .config import PredictConfig

        return PredictConfig
    if name == "export_model":
        from .export import export_model

        return export_model
    if name == "discover":
        from .data import discover

        return discover
    if name == "make_demo_data":
        from .demo import make_demo_data

        return make_demo_data
    raise AttributeError(f"module 'fastseg' has no attribute {name!r}")
