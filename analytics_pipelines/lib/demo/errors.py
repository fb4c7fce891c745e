"""The demo generator's one error type."""


class DemoError(Exception):
    """The demo data cannot be generated as asked; the message says what and why."""
