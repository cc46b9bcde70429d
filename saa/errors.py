"""User-facing errors.

Everything a user can cause (a missing file, a bad config value, an unreadable image) is raised as
a :class:`SaaError` subclass with a message that names the file or key and says what to do. The
CLI prints these without a traceback (``--debug`` shows it).
"""


class SaaError(Exception):
    """Base class of the errors that are the user's to fix."""


class ConfigError(SaaError):
    """A configuration file or override is invalid."""


class CheckpointError(SaaError):
    """A model file is missing, unreadable or of the wrong kind."""


class ImageReadError(SaaError):
    """An image or mask file cannot be read."""


class ImageTooLargeError(ImageReadError):
    """An image file declares more pixels than the configured limit (checked from its header)."""


class DatasetError(SaaError):
    """A dataset folder does not have the expected layout."""


INSTALL_HINT = "run `bash install.sh` to download the model files into weights/"
