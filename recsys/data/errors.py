"""The error every loader raises for a source it cannot read."""


class DataLoadError(ValueError):
    """A data source that cannot be read at all (missing, empty, unparsable, unknown format). The
    message names the file (and the line, for text formats) and what to do."""
