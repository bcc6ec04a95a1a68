"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class KdqError(ValueError):
    """Bad input from the user: says what was received and what to do."""


class DataError(KdqError):
    """A data set is missing, malformed or inconsistent."""


class ConfigError(KdqError):
    """A configuration key or value is invalid."""


class ModelError(KdqError):
    """A model file is unreadable or does not fit the task."""
