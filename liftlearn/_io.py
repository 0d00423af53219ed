"""Files written whole or not at all, and write checks made before the work.

Every file liftlearn writes (model files, checkpoints, reports) goes through
:func:`atomic_path`: the content is written to a temporary file with a unique
name in the target's folder, flushed to disk (``fsync``) and only then renamed
over the target (``os.replace``, atomic on POSIX and Windows). A full disk, a
crash or Ctrl-C while writing leaves the previous file as it was and no
temporary file behind; two processes writing the same target never collide on
the temporary name.

:func:`check_writable` and :func:`check_writable_dir` probe a destination
before any training time is spent, so a typo or a read-only folder is named at
once rather than after hours of training.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from typing import Callable, Iterable, Iterator

__all__ = [
    "TEMP_MARK",
    "atomic_open",
    "atomic_path",
    "atomic_write",
    "check_writable",
    "check_writable_dir",
    "create_new",
]

#: Part of every temporary file name (what clean-up code may look for).
TEMP_MARK = ".liftlearn-tmp-"


def _fsync_dir(folder: str) -> None:
    """Make a rename durable: fsync the folder where the OS allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open folders; nothing to do there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the data is synced
    finally:
        os.close(fd)


def _fit_name(stem: str, extra: str, folder: str) -> str:
    """``stem`` shortened (from its end) so that ``stem + extra`` is a file
    name the folder's file system takes: a target name near the length limit
    must not fail for its temporary name's sake."""
    try:
        limit = os.pathconf(folder or ".", "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # Windows has no pathconf
        limit = 255
    encode = os.fsencode
    room = limit - len(encode(extra))
    while stem and len(encode(stem)) > room:
        stem = stem[:-1]
    return stem


def create_new(names: Iterable[str]) -> str | None:
    """Create the first of ``names`` that does not exist yet, empty, and
    return it (None when every one exists).

    ``O_EXCL`` makes each creation atomic: of threads or processes going
    through the same names, each gets a name of its own. ``os.open(...,
    0o666)`` lets the kernel apply the umask, so the file gets the mode any
    new file would (0644 under the usual umask 022), unlike
    ``tempfile.mkstemp``'s 0600.

    Parameters
    ----------
    names : iterable of str
        Tried in order; an existing name (file or folder) is passed over.
        Any other error (a missing or read-only folder) is raised.

    Returns
    -------
    name : str or None
    """
    for name in names:
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return name
    return None


def _create_temp(path: str) -> str:
    """Create an empty temporary file next to ``path`` and return its name.

    The name is ``.<stem>.liftlearn-tmp-<random><suffix>``, created with
    :func:`create_new`: unique across threads and processes, with the mode
    a new file gets.
    """
    folder, base = os.path.split(path)
    # The suffix stays last: writers that pick a format from it (joblib's
    # compression, liftlearn.save) see the target's.
    stem, suffix = os.path.splitext(base)
    stem = _fit_name(stem, f".{TEMP_MARK}{'0' * 12}{suffix}", folder)
    tmp = create_new(os.path.join(folder, f".{stem}{TEMP_MARK}{secrets.token_hex(6)}{suffix}")
                     for _ in range(100))
    if tmp is None:
        raise FileExistsError(errno.EEXIST, "could not find a free temporary name", path)
    return tmp


def _chmod(fd: int, path: str, mode: int) -> None:
    """Set an open file's mode through its descriptor where the OS allows
    (the permission check was made at open), else by name."""
    if os.chmod in os.supports_fd:
        os.chmod(fd, mode)
    else:
        os.chmod(path, mode)


def _names_folder(path: str) -> bool:
    """Whether ``path`` ends in a separator, ``.`` or ``..``: it names a
    folder, whatever exists. ``os.path.abspath`` drops such an ending, so a
    check of ``dirname(abspath(path))`` would pass a path no file can have."""
    return os.path.basename(path) in ("", os.curdir, os.pardir)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (" (the disk is full)" if exc.errno == errno.ENOSPC else "")
    return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def atomic_path(path, *, what: str = "file", durable: bool = True) -> Iterator[str]:
    """A temporary path to write to; renamed to ``path`` when the block ends.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write. An existing file keeps its permission bits (a
        read-only one is replaced like any other: what counts is that its
        folder is writable); a new one gets the mode a plain
        ``open(path, "w")`` would give.
    what : str, default="file"
        What the file is, for error messages ("model file", "checkpoint").
    durable : bool, default=True
        Sync the file and its folder to the disk before and after the
        rename, so that a power loss leaves the old file or the new one.
        False for files that can be made again (dataset caches, thousands
        of small files, where the syncs took four fifths of the time): still
        all or nothing for the processes that read them, and a process
        killed mid-write leaves no partial file.

    Yields
    ------
    tmp : str
        Write the whole content there (by name: ``torch.save``,
        ``joblib.dump`` and ``safetensors`` all take a path).

    Raises
    ------
    OSError
        If ``path`` ends in a separator (``IsADirectoryError``), or if the
        temporary file cannot be created, written, synced or renamed;
        the message says what was being written, where, and why (``errno``
        is kept, so ``ENOSPC`` still reads as a full disk). Any exception of
        the block itself propagates unchanged. In every failure the
        temporary file is removed and ``path`` is left as it was.
    """
    path = os.fspath(path)
    if _names_folder(path):
        raise IsADirectoryError(errno.EISDIR, f"cannot write the {what} {path!r}: the path names "
                                              "a folder, not a file")
    folder = os.path.dirname(path) or "."
    try:
        tmp = _create_temp(path)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write the {what} {path!r}: cannot create a file "
                                 f"in {folder!r}: {_describe(exc)}") from exc
    try:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            mode = stat.S_IMODE(os.stat(tmp).st_mode)  # the umask's choice
        yield tmp
        try:
            # Writers may replace the file they were given (and with it its
            # mode): set the mode and sync what is there now. The mode is set
            # through the descriptor opened for the fsync, not before the
            # open: a read-only destination (0444) gives the temporary file
            # that mode, and its owner could then no longer open it for
            # writing (Windows' fsync needs a writable descriptor), so
            # replacing a read-only file in a writable folder would fail
            # after all the work although check_writable let it pass.
            if durable:
                with open(tmp, "rb+") as f:
                    _chmod(f.fileno(), tmp, mode)
                    os.fsync(f.fileno())  # after the chmod: syncs the mode too
            else:
                os.chmod(tmp, mode)  # not reopened after it, so read-only is fine
            os.replace(tmp, path)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write the {what} {path!r}: {_describe(exc)}") from exc
        if durable:
            _fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_write(path, writer: Callable[[str], object], *, what: str = "file",
                 durable: bool = True) -> None:
    """Write ``path`` atomically: ``writer(tmp)`` writes a temporary file.

    Parameters
    ----------
    path : str or os.PathLike
    writer : callable
        Called with the temporary path; must write the whole file there.
    what : str, default="file"
        What the file is, for error messages.
    durable : bool, default=True
        As in :func:`atomic_path`.

    Raises
    ------
    OSError
        If the file cannot be written; an ``OSError`` raised by ``writer`` is
        re-raised with the file, what it is and the reason (errno kept), and
        any other error of ``writer`` propagates unchanged. ``path`` is left
        as it was.
    """
    path = os.fspath(path)
    with atomic_path(path, what=what, durable=durable) as tmp:
        try:
            writer(tmp)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write the {what} {path!r}: {_describe(exc)}") from exc


@contextlib.contextmanager
def atomic_open(path, mode: str = "w", *, what: str = "file", **kwargs):
    """``open(path, mode)`` whose content replaces ``path`` only when the
    block ends without an error (see :func:`atomic_path`).

    Parameters
    ----------
    path : str or os.PathLike
    mode : {"w", "wb", "wt"}, default="w"
    what : str, default="file"
    **kwargs
        Passed to :func:`open` (``encoding``, ``newline``, ...).
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_open writes whole files; mode={mode!r} must be 'w', 'wt' or 'wb'")
    path = os.fspath(path)
    with atomic_path(path, what=what) as tmp:
        try:
            with open(tmp, mode, **kwargs) as f:
                yield f
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write the {what} {path!r}: {_describe(exc)}") from exc


def _probe(folder: str) -> None:
    """Create and remove a file in ``folder`` (the only reliable test: access()
    says yes to root on read-only mounts and in /proc)."""
    tmp = _create_temp(os.path.join(folder, "write-check"))
    os.remove(tmp)


def check_writable(path, what: str, *, create_folder: bool = False) -> None:
    """Check, before any work is done, that a file can be written at ``path``.

    Nothing is left behind: the check creates and removes a temporary file
    in the folder (only a real write answers for read-only mounts, ``/proc``
    and full quotas; ``os.access`` says yes to root everywhere).

    Parameters
    ----------
    path : str or os.PathLike
        A file to be created or replaced.
    what : str
        The parameter or option that named it (``"--out"``), for the error.
    create_folder : bool, default=False
        Create the file's folder (and its parents) when missing, instead of
        refusing the path.

    Raises
    ------
    ValueError
        Naming ``what`` and the path: an empty path, a folder (or a path
        ending in a separator, ``.`` or ``..``), something that is not a
        regular file, a missing folder, or a folder where no file
        can be created.
    """
    try:
        path = os.fspath(path)
    except TypeError:
        raise ValueError(f"{what} must be a path, got {type(path).__name__}") from None
    if not path:
        raise ValueError(f"{what} is empty; give the file to write")
    if _names_folder(path):
        raise ValueError(f"{what}={path!r} names a folder; give the file to write")
    if os.path.isdir(path):
        raise ValueError(f"{what}={path!r} is a folder; give the file to write")
    if os.path.lexists(path) and not os.path.isfile(path):
        raise ValueError(f"{what}={path!r} exists and is not a regular file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        if os.path.lexists(folder):
            raise ValueError(f"{what}={path!r}: {folder!r} is not a folder")
        if not create_folder:
            raise ValueError(f"{what}={path!r}: the folder {folder!r} does not exist")
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"{what}={path!r}: cannot create the folder {folder!r}: "
                             f"{_describe(exc)}") from None
    try:
        _probe(folder)
    except OSError as exc:
        raise ValueError(f"{what}={path!r} cannot be written: {folder!r}: {_describe(exc)}") from None


def check_writable_dir(path, what: str, *, create: bool = True) -> None:
    """Check, before any work is done, that files can be written in a folder.

    Parameters
    ----------
    path : str or os.PathLike
    what : str
        The parameter or option that named it (``"checkpoint_dir"``).
    create : bool, default=True
        Create the folder (and its parents) when it does not exist.

    Raises
    ------
    ValueError
        Naming ``what`` and the path: it is a file, cannot be created, or
        no file can be created in it.
    """
    try:
        path = os.fspath(path)
    except TypeError:
        raise ValueError(f"{what} must be a path, got {type(path).__name__}") from None
    if not path:
        raise ValueError(f"{what} is empty; give a folder")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise ValueError(f"{what}={path!r} exists and is not a folder")
    if not os.path.isdir(path):
        if not create:
            raise ValueError(f"{what}={path!r} does not exist")
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"{what}={path!r} cannot be created: {_describe(exc)}") from None
    try:
        _probe(path)
    except OSError as exc:
        raise ValueError(f"{what}={path!r} is not writable: {_describe(exc)}") from None
