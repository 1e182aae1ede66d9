"""Errors vqclip raises for bad input: each message says what was wrong and what to do.

The CLI prints these without a traceback and exits non-zero; anything else is a bug.
"""


class VQClipError(Exception):
    """Base class of errors that are the user's to fix (bad input, missing files)."""


class ConfigError(VQClipError, ValueError):
    """A setting has a bad value; the message names the field and the value, and `field` holds
    the option's name where one option is at fault (the web API reports it on its own)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self):  # pickled across worker processes: keep the field
        return (_config_error, (str(self), self.field))


def _config_error(message: str, field: str | None) -> ConfigError:
    return ConfigError(message, field=field)


class CheckpointError(VQClipError):
    """A checkpoint file cannot be read, or does not match the model it is loaded into."""


class WeightsNotFoundError(VQClipError, FileNotFoundError):
    """Weights are not on disk and cannot be downloaded (offline, or no network)."""


class ChecksumError(VQClipError):
    """A downloaded file does not have the published sha256."""


class VQClipWarning(UserWarning):
    """Something the user should know that does not stop the run (a prompt cut to fit CLIP)."""
