"""Errors a user can cause. The CLI prints their message as one line and exits non-zero."""


class IdclusterError(Exception):
    """Base class: a problem with the user's input, config or environment, not a bug."""


class ConfigError(IdclusterError):
    """Bad override, unknown option or missing required key."""


class InputError(IdclusterError):
    """Missing/empty input folder, no faces anywhere, output that would clobber data."""


class ModelError(IdclusterError):
    """Model weights missing or unloadable."""


class CacheMiss(IdclusterError):
    """A command that only reads the cache found a stage that was never run."""


class PipelineError(IdclusterError):
    """A stage could not finish (e.g. a worker process died); cached work is kept."""
