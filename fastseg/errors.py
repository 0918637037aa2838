"""Exceptions fastseg raises for problems the user can fix.

The CLI turns every ``FastsegError`` into one ``Error: ...`` line and a non-zero exit code;
anything else is a bug and keeps its traceback.
"""

__all__ = ["FastsegError", "DataError", "WeightsError", "ModelError", "ConfigError", "TrainingError", "OutputError",
           "Interrupted"]


class FastsegError(Exception):
    """Base class: a user-facing problem with a one-line explanation."""


class DataError(FastsegError):
    """The data folder, an image or a mask cannot be used as given."""


class WeightsError(FastsegError):
    """Encoder weights cannot be found, read, or do not fit the encoder."""


class ModelError(FastsegError):
    """A model file (export, bundle) cannot be read or used."""


class ConfigError(FastsegError):
    """An option or config-file value is invalid."""


class TrainingError(FastsegError):
    """Training cannot go on (loss became NaN/inf) or a run folder cannot be resumed."""


class OutputError(FastsegError):
    """An output cannot be written: it would replace a file fastseg must not touch, or the write failed."""


class Interrupted(TrainingError):
    """Ctrl-C stopped a run: the message says what is saved and how to continue; the CLI exits 130."""

    def __init__(self, message: str, run=None, epoch: int | None = None):
        super().__init__(message)
        self.run, self.epoch = run, epoch  # the run folder (None: not made yet), epochs saved in it
