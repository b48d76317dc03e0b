"""Every error the core raises, by what happened.

Adapters decide from the class alone, by who can fix it: a PermanentError is the data's fault, recorded and never
retried (a bad image stays bad); a TransientError is retried (the backend may be back in a minute); an
OperatorError is the deployment's fault (a setting, the weights, the index's model): event adapters retry it, so
the queue's alarms call the operator and no upload is dead-lettered for a mistake only the operator can fix.
"""


class ImgSearchError(Exception):
    """Base of every error the core raises on purpose."""


class PermanentError(ImgSearchError):
    """Retrying cannot help: record the reason and move on."""


class TransientError(ImgSearchError):
    """Something we depend on is down or overloaded: retry later."""


class OperatorError(ImgSearchError):
    """The deployment is wrong: only the operator can fix it. Retried (and alarmed), never dead-lettered."""


class ConfigError(OperatorError):
    """A setting is missing or has a value we cannot use."""


class InvalidRequestError(PermanentError):
    """A request's own values are wrong (page 0, min_score 2): the caller's fault, not the operator's."""


class StorageNotAllowedError(PermanentError):
    """The bucket or folder is not one this deployment reads (IMGSEARCH_ALLOWED_BUCKETS), whoever named it."""


class BadImageError(PermanentError):
    """The bytes are not an image we can decode (empty, truncated, unknown format)."""


class ImageTooLargeError(BadImageError):
    """The image is over the byte or pixel limit (a guard against decompression bombs)."""


class WeightsError(OperatorError):
    """The model weights cannot be loaded; we never fall back to random weights."""


class NotFoundError(ImgSearchError):
    """The object or document does not exist."""


class IncompatibleIndexError(OperatorError):
    """The index exists with another vector size or model: refusing to mix vectors."""


class BackendUnavailableError(TransientError):
    """The index or the object store did not answer."""


class UrlFetchError(ImgSearchError):
    """The image at a URL could not be fetched: no such host, no connection, a timeout, a broken answer, an error
    status. The remote server's doing, neither the request's form (a refused URL is an InvalidRequestError) nor
    this deployment's: the API answers 502."""


class UploadsUnavailableError(ImgSearchError):
    """This deployment cannot take uploads from the page: it has no S3 bucket to put them in (none configured,
    or a local folder). Nothing the request can change; the API answers 409."""
