"""The one exception conversion and publishing raise for problems the user must fix (the CLI prints it and exits 1)."""


class ConversionError(Exception):
    """A checkpoint that cannot be converted faithfully, or a directory that cannot be published."""
