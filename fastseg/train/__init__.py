"""Training stage: loaders, augmentation, the learner, the loop (LR finder, phases, resume), callbacks, runs."""


def __getattr__(name):
    # names that old code and exported .pkl files use (the module's before the split) resolve here, on first use
    import importlib

    module = importlib.import_module("fastseg.train.loop")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
