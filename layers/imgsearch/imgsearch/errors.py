"""Every error the core raises, by what happened.

Adapters decide from the class alone: a PermanentError is recorded and never retried (a bad image stays
bad), a TransientError is retried (the backend may be back in a minute).
"""


class ImgSearchError(Exception):
    """Base of every error the core raises on purpose."""


class PermanentError(ImgSearchError):
    """Retrying cannot help: record the reason and move on."""


class TransientError(ImgSearchError):
    """Something we depend on is down or overloaded: retry later."""


class ConfigError(PermanentError):
    """A setting is missing or has a value we cannot use."""


class InvalidRequestError(PermanentError):
    """A request's own values are wrong (page 0, min_score 2): the caller's fault, not the operator's."""


class BadImageError(PermanentError):
    """The bytes are not an image we can decode (empty, truncated, unknown format)."""


class ImageTooLargeError(BadImageError):
    """The image is over the byte or pixel limit (a guard against decompression bombs)."""


class WeightsError(PermanentError):
    """The model weights cannot be loaded; we never fall back to random weights."""


class NotFoundError(ImgSearchError):
    """The object or document does not exist."""


class IncompatibleIndexError(PermanentError):
    """The index exists with another vector size or model: refusing to mix vectors."""


class BackendUnavailableError(TransientError):
    """The index or the object store did not answer."""
