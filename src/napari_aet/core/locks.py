"""One writer per output folder, and no output onto an input.

:func:`output_lock` holds an operating-system lock on a file inside an output folder for as
long as a command builds that folder (``run``, ``batch`` jobs, ``generate-data``, ``train``,
``figures``, ``simulate``, ``demo``); a second writer is refused with one line that names the
holder's PID. The lock belongs to the open file, so it dies with its process: a lock file left
by a killed process blocks nobody.

:func:`tracking_inputs` collects every file a command reads, named or found (angles, mdoc,
sidecars, weights, configs); while it is active :func:`check_not_input` (which every atomic
write in :mod:`napari_aet.core.io` calls) refuses an output that is one of them, even with
``--overwrite``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import Iterable, Iterator, Optional

from .errors import AETInputError

__all__ = ["LOCK_NAME", "FolderInUse", "output_lock", "tracking_inputs", "note_input", "check_not_input"]

LOCK_NAME = ".napari-aet.lock"


class FolderInUse(AETInputError):
    """Another process (or another task of this one) is writing the output folder."""


_GUARD = threading.Lock()
_HELD: dict = {}  # real path of a locked folder -> [thread id, depth, fd]


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().split()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return "of unknown PID"
    return f"PID {pid}" if pid.isdigit() else "of unknown PID"


def _try_lock(fd: int) -> bool:
    """Lock ``fd`` without waiting; False when another open file holds it."""
    if sys.platform == "win32":  # pragma: no cover - not tested here
        import msvcrt

        os.lseek(fd, 1 << 20, os.SEEK_SET)  # lock a byte past the PID, so others can still read it
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        finally:
            os.lseek(fd, 0, os.SEEK_SET)
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        return False
    return True


def _acquire(folder: Path, lock: Path) -> int:
    """Open and lock ``lock``, retrying when a releasing holder removed it meanwhile."""
    for _ in range(100):
        # never through a link: a planted link would have us truncate the file it points to
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        if not _try_lock(fd):
            os.close(fd)
            raise FolderInUse(f"{folder} is being written by another napari-aet process ({_holder(lock)}, "
                              f"lock file {lock.name}); wait for it to finish or choose another folder")
        try:  # the holder we waited on may have removed the file: then ours is a stray inode
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same or sys.platform == "win32":
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)
    raise FolderInUse(f"could not lock {folder} (its lock file {lock.name} keeps changing); try again")


def _first_missing(folder: Path) -> Optional[Path]:
    """The outermost folder of ``folder``'s chain that does not exist yet (None: all exist)."""
    missing = None
    for p in [folder, *folder.parents]:
        if p.exists():
            break
        missing = p
    return missing


@contextlib.contextmanager
def output_lock(folder, what: str = "output folder") -> Iterator[Path]:
    """Hold the lock on an output folder while a command builds it.

    The folder is created if missing (and removed again at the end when it is still empty);
    the lock file ``.napari-aet.lock`` inside it holds the PID of the writer. POSIX systems
    lock it with ``fcntl.flock``; on Windows ``msvcrt.locking`` locks one byte of it instead
    (the file then stays behind after the command; it blocks nobody). Either lock belongs to
    the open file, so it ends with its process, however that ends. The same thread may lock
    a folder it holds again (a command and the stage functions it calls); another thread of
    the same process is refused like another process.

    Parameters
    ----------
    folder : path
        The output folder.
    what : str
        What the folder is, for the error message.

    Yields
    ------
    Path
        The lock file.

    Raises
    ------
    FolderInUse
        Another process or thread holds the folder (one line naming its PID).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise AETInputError(f"{what} {folder} is a file, not a folder; give a folder")
    created = _first_missing(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(folder)
    lock = folder / LOCK_NAME
    me = threading.get_ident()
    with _GUARD:
        held = _HELD.get(key)
        if held is not None and held[0] != me:
            raise FolderInUse(f"{folder} is being written by another task of this process (PID {os.getpid()}); "
                              "wait for it to finish or choose another folder")
        if held is not None:
            held[1] += 1
        else:
            _HELD[key] = [me, 1, _acquire(folder, lock)]
    try:
        yield lock
    finally:
        with _GUARD:
            held = _HELD[key]
            held[1] -= 1
            if held[1] == 0:
                del _HELD[key]
                if sys.platform != "win32":
                    with contextlib.suppress(OSError):
                        os.unlink(lock)  # before unlocking: a waiter then sees a stray inode and retries
                os.close(held[2])
                _remove_if_empty(folder, created)


def _remove_if_empty(folder: Path, created: Optional[Path]) -> None:
    """Remove the folders :func:`output_lock` created when nothing was written into them."""
    if created is None:
        return
    for p in [folder, *folder.parents]:
        try:
            p.rmdir()
        except OSError:
            return
        if p == created:
            return


# ----------------------------------------------------------------------- inputs

_INPUTS: Optional[dict] = None  # real path -> the path as read; None: not tracking
_INPUTS_GUARD = threading.Lock()


@contextlib.contextmanager
def tracking_inputs() -> Iterator[None]:
    """Collect every file read while the block runs; refuse writes onto any of them.

    The command line runs each command inside this block (the viewer does not: saving an
    edited table back where it came from is an editor's job there).

    Yields
    ------
    None
    """
    global _INPUTS
    with _INPUTS_GUARD:
        outer, _INPUTS = _INPUTS, ({} if _INPUTS is None else _INPUTS)
    try:
        yield
    finally:
        with _INPUTS_GUARD:
            _INPUTS = outer


def note_input(path) -> None:
    """Record ``path`` as an input of the running command (a no-op outside :func:`tracking_inputs`).

    Parameters
    ----------
    path : path
        A file the command read (named by the user or found beside another).
    """
    if _INPUTS is None or path is None:
        return
    with _INPUTS_GUARD:
        if _INPUTS is not None:
            _INPUTS[os.path.realpath(path)] = Path(path)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_not_input(outputs: Iterable, what: str = "output") -> None:
    """Refuse an output that resolves to (or is a link to) a file this command read.

    Parameters
    ----------
    outputs : iterable of paths
        Files about to be written.
    what : str
        What they are, for the message.

    Raises
    ------
    AETInputError
        Naming the output and the input it would replace.
    """
    if _INPUTS is None:
        return
    with _INPUTS_GUARD:
        inputs = dict(_INPUTS or {})
    for out in outputs:
        if out is None:
            continue
        real = os.path.realpath(out)
        hit = inputs.get(real) or next((p for r, p in inputs.items() if _same_file(real, r)), None)
        if hit is not None:
            raise AETInputError(f"{what} {out} is the input {hit} that this command read; writing there would "
                                "destroy it, even with --overwrite: choose another name")
