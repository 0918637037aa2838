"""Data stage: layouts, image/mask readers, labelling-tool formats, splits, discovery, check, demo data."""

from .._compat import reexport

# names that old code and exported .pkl files use (the module's before the split) resolve here, on first use
__getattr__ = reexport(__name__, "fastseg.data.dataset")
