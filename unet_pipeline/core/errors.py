"""The pipeline's own errors: each message names the file, key or array and what was expected.

The command line turns these (and only these) into a one-line message with
exit status 2; anything else is a bug and keeps its traceback.
"""

import errno


class PipelineError(Exception):
    """Base of the errors a user can act on."""


class InputError(PipelineError, ValueError):
    """Bad input: the message names the file or array and what was expected."""


class OutputBusy(PipelineError, RuntimeError):
    """Another live process is writing the same output."""


class StallError(PipelineError, TimeoutError):
    """No task finished for the stall timeout: the cluster's workers are gone, stopped or stuck."""


class WorkersLost(PipelineError, RuntimeError):
    """The workers running a task died too often (killed, out of memory): the message names the task."""


def workers_lost(what: str, tries: int) -> WorkersLost:
    """The error for `what` (a task, named) whose worker died each of the `tries` times it ran."""
    return WorkersLost(f"{what}: the Dask worker running it died every time it ran ({tries} tries: killed, or out of "
                       "memory?); what finished is kept: check the workers' memory and logs, then rerun")


class ConfigError(PipelineError, ValueError):
    """A setting of the wrong type or value: the message names the key and what was expected."""


class StorageError(PipelineError, OSError):
    """An output cannot be written (full disk, read-only or forbidden location): the message names the file."""


# what the file system says when an output cannot be written: nothing the pipeline can fix, the user can
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def storage_error(err: BaseException, output: object = None) -> StorageError | None:
    """`err` as a StorageError naming its file (or, when the error names none, `output`) when it is a full,
    read-only or forbidden location, else None."""
    if not isinstance(err, OSError) or isinstance(err, StorageError) or err.errno not in STORAGE_ERRNOS:
        return None
    return StorageError(err.errno, f"{err.filename or output}: cannot write it ({err.strerror}); free space or fix the "
                        "location, then rerun: finished blocks are kept")
