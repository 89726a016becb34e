"""The one exception type users see: a message that names the problem and the way out."""


class ConversionError(Exception):
    """A model or a path that cannot be converted; the message says why and what to do."""
