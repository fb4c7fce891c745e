"""Errors of ingestion whose message is shown to people as it is."""


class FileRejected(Exception):
    """The file cannot be loaded as received (format, encoding, shape); nothing of it is kept."""


class KeysRefused(ValueError):
    """A run was asked to load keys that are not deliveries of its source; nothing was loaded."""
