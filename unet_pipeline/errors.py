"""The pipeline's own errors: each message names the file, key or array and what was expected.

The command line turns these (and only these) into a one-line message with
exit status 2; anything else is a bug and keeps its traceback.
"""


class PipelineError(Exception):
    """Base of the errors a user can act on."""


class InputError(PipelineError, ValueError):
    """Bad input: the message names the file or array and what was expected."""


class OutputBusy(PipelineError, RuntimeError):
    """Another live process is writing the same output."""
