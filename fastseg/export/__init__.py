"""Export stage: the fastai .pkl, the safe bundle, ONNX (and int8), TorchScript, the --export copy."""

from .._compat import reexport

# names that old code and exported .pkl files use (the module's before the split) resolve here, on first use
__getattr__ = reexport(__name__, "fastseg.export.formats")
