"""The errors raised about checkpoints, one class per thing that can go wrong.

All derive from ``WeightsError`` (a ``ValueError``), so callers can catch
one class; tests and tools can tell the cases apart. Every message names the
file or URL and says what to do.
"""

from __future__ import annotations


class WeightsError(ValueError):
    """A checkpoint that cannot be used, with a message that says why and what to do."""


class CorruptCheckpointError(WeightsError):
    """The file cannot be read as the format it claims (truncated, damaged, not a checkpoint)."""


class UnsafeCheckpointError(WeightsError):
    """A pickle that holds something other than arrays; it was not unpickled."""


class NotReXNetError(WeightsError):
    """A readable checkpoint, but of another architecture."""


class WrongVariantError(WeightsError):
    """A ReXNet checkpoint of another width, kind (V1/lite) or class count."""


class DownloadError(WeightsError):
    """The host could not be reached or answered with an error."""


class IncompleteDownloadError(DownloadError):
    """The download ended early or has the wrong size."""


class DownloadTimeoutError(DownloadError):
    """The download took longer than REXNET_PLUGIN_DOWNLOAD_TIMEOUT allows."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the checksum that the table or the server gives."""


class ChangedFileError(ChecksumError):
    """The download differs from the file's first download (recorded in the cache)."""


class ManualDownloadError(WeightsError):
    """The publisher's host needs a browser; the user has to fetch the file."""
