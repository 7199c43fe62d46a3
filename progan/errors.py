"""The one exception type that the CLI turns into a one-line message and exit code 2, and the
wording of operating-system errors (full disk, read-only folder, no permission) in that form."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager


class UserError(Exception):
    """A problem with the user's input or machine: the message names the problem and the fix."""


def install_hint(extra: str) -> str:
    """How to install an optional extra: no progan package is published, so from the clone."""
    return f"in the progan clone, pip install -e '.[{extra}]' or ./setup.sh"


# errno -> (what happened, what to do); the message names the file in between.
_OS_ERRORS = {
    errno.ENOSPC: ("no space left on the device while writing", "free disk space or write elsewhere"),
    errno.EDQUOT: ("disk quota exceeded while writing", "free space in your quota or write elsewhere"),
    errno.EROFS: ("read-only file system:", "choose a writable location"),
    errno.EACCES: ("permission denied:", "check the permissions or choose another location"),
    errno.EPERM: ("operation not permitted:", "check the permissions or choose another location"),
    errno.ENOTDIR: ("a file is in the way of a folder:", "remove the file or choose another location"),
    errno.EISDIR: ("is a folder, a file was expected:", "pass a file"),
    errno.EEXIST: ("already exists:", "remove it or choose another name"),
    errno.ENOENT: ("no such file or folder:", "check the path"),
    errno.ENAMETOOLONG: ("file name too long:", "choose a shorter path"),
    errno.EMFILE: ("too many open files at", "raise 'ulimit -n'"),
    errno.EIO: ("input/output error (failing disk?) at", "check the disk"),
}


def os_error_message(e: OSError, path: str | os.PathLike | None = None) -> str:
    """One line for an OSError: what happened, the file, and the fix."""
    where = path if path is not None else (e.filename if e.filename is not None else "(unknown file)")
    what, fix = _OS_ERRORS.get(e.errno, (f"{e.strerror or type(e).__name__}:", "check the file and retry"))
    return f"{what} {where}; {fix}"


def user_error_from_os(e: OSError, path: str | os.PathLike | None = None) -> UserError:
    err = UserError(os_error_message(e, path))
    err.__cause__ = e
    return err


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an OSError raised while writing `path` (full disk, read-only folder, no permission)
    into a UserError naming it: many writes (os.pwrite, a PNG encoder) raise it without a name."""
    try:
        yield
    except OSError as e:
        raise user_error_from_os(e, e.filename if e.filename is not None else path) from e
