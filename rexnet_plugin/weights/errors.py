"""Errors about checkpoints: all ``WeightsError`` (a ValueError), naming the file and the fix."""


class WeightsError(ValueError):
    """A checkpoint that cannot be used."""


class CorruptCheckpointError(WeightsError):
    """Unreadable as the format it claims (truncated, damaged, not a checkpoint)."""


class UnsafeCheckpointError(WeightsError):
    """A pickle asking for objects other than arrays; refused before anything ran."""


class NotReXNetError(WeightsError):
    """A readable checkpoint of another architecture."""


class WrongVariantError(WeightsError):
    """A ReXNet checkpoint of another width, kind or class count."""


class DownloadError(WeightsError):
    """The host failed; the download was too slow, too large or cut short."""


class ChecksumError(DownloadError):
    """The bytes differ from a published, offered or first-download checksum."""


class ManualDownloadError(WeightsError):
    """The host needs a browser; the user fetches the file."""
