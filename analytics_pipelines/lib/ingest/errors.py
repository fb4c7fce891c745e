"""The one error that marks a file version `failed`: its message is the reason shown to people."""


class FileRejected(Exception):
    """The file cannot be loaded as received (format, encoding, shape); nothing of it is kept."""
