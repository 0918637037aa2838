"""Training stage: loaders, augmentation, the learner, the loop (LR finder, phases, resume), callbacks, runs."""

from .._compat import reexport

# names that old code and exported .pkl files use (the module's before the split) resolve here, on first use
__getattr__ = reexport(__name__, "fastseg.train.loop")
