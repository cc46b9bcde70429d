"""One writer per run folder: the lock file ``run.lock``.

A run takes the lock before it writes anything into its folder and keeps it to the end; a second
``saa run`` into the same ``--out`` stops at once with one line naming the holder (process id,
host, start time and command) instead of failing later in a way that depends on timing.

The lock is an ``flock`` on ``run.lock``: the operating system releases it when its process ends,
however it ends (SIGKILL, a crash, a reboot), so a lock left behind is recognised as stale and taken
over with a note naming the process that left it. The file holds the holder's
:class:`~saa.records.LockInfo` as JSON, for the message. Where the file system has no ``flock``
(some network mounts), the lock falls back to the process id: a lock whose process no longer runs
on this host is stale; one recorded by another host is kept (its owner cannot be checked from
here) and the message says how to remove it. Under torchrun only rank 0 takes the lock: the
processes of one torchrun are one writer.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shlex
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from .errors import SaaError
from .records import LockInfo, RecordError, parse_json, parse_record

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["RunLock", "FolderBusy", "lock_holder", "this_command"]

log = logging.getLogger("saa.run")

_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}


class FolderBusy(SaaError):
    """Another run holds the run folder's lock."""


def this_command() -> str:
    """The command line of this process, as a shell would read it."""
    argv = list(sys.argv) or ["python"]
    if argv and argv[0].endswith("__main__.py"):
        argv[0] = "saa"
    return shlex.join(argv)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> Optional[bool]:
    """Whether process ``pid`` runs on this host (None: cannot tell)."""
    if os.name != "posix":
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return None
    return True


def _read_info(data: bytes, path: Path) -> Optional[LockInfo]:
    if not data.strip():
        return None
    try:
        return parse_record(LockInfo, parse_json(data.decode("utf-8", "replace")), str(path))
    except (RecordError, ValueError, RecursionError):
        return None


def _describe(info: Optional[LockInfo]) -> str:
    if info is None:
        return "another saa process (it is starting: its details are not written yet)"
    cmd = f", command: {info.command}" if info.command else ""
    return f"process {info.pid} on host {info.host}, started {info.started}{cmd}"


def _busy(folder: Path, info: Optional[LockInfo], extra: str = "") -> FolderBusy:
    return FolderBusy(f"{folder} is in use by another run: {_describe(info)}; wait for it to finish or choose "
                      f"another output folder (--out DIR){extra}")


class RunLock:
    """The lock of one run folder. ``acquire()`` returns a note when it took over a stale lock (else
    None) and raises :class:`FolderBusy` when another live run holds it; ``release()`` removes it."""

    def __init__(self, path: Path | str, command: Optional[str] = None):
        self.path = Path(path)
        self.folder = self.path.parent
        self.command = this_command() if command is None else command
        self._fd: Optional[int] = None
        self.info: Optional[LockInfo] = None

    # -- acquiring

    def acquire(self) -> Optional[str]:
        if self._fd is not None:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(100):  # a releaser may remove the file between our open and our lock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                held = self._flock(fd)
            except BaseException:
                os.close(fd)
                raise
            if held is None:  # no flock on this file system
                return self._acquire_by_pid(fd)
            if not held:
                info = _read_info(self._read(fd), self.path)
                os.close(fd)
                raise _busy(self.folder, info)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                return self._take(fd)
            os.close(fd)
        raise FolderBusy(f"{self.folder}: could not take the run folder's lock {self.path} (it keeps being replaced)")

    @staticmethod
    def _flock(fd: int) -> Optional[bool]:
        """True: locked; False: held by another; None: the file system has no flock."""
        if fcntl is None:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                return False
            if e.errno in _NO_FLOCK:
                return None
            raise
        return True

    @staticmethod
    def _read(fd: int) -> bytes:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 1 << 16)

    def _take(self, fd: int) -> Optional[str]:
        """We hold the flock: note a previous holder that ended without releasing, write our info."""
        previous = _read_info(self._read(fd), self.path)
        note = None
        if previous is not None and not (previous.pid == os.getpid() and previous.host == socket.gethostname()):
            alive = _pid_alive(previous.pid) if previous.host == socket.gethostname() else None
            gone = ("it is no longer running" if alive is False else
                    "its lock was released without being removed (the process ended)")
            note = (f"{self.folder}: taking over the stale lock of {_describe(previous)}: {gone}; the files it "
                    "wrote are reused where they are valid")
        self._write(fd)
        return note

    def _acquire_by_pid(self, fd: int) -> Optional[str]:
        """Without flock: the lock file's recorded process decides (same host, dead: stale)."""
        info = _read_info(self._read(fd), self.path)
        note = None
        if info is not None:
            here = info.host == socket.gethostname()
            alive = _pid_alive(info.pid) if here else None
            if alive is not False:
                os.close(fd)
                extra = ("" if here else f"; it was recorded by another host and cannot be checked from here: "
                                         f"if no run uses the folder, delete {self.path}")
                raise _busy(self.folder, info, extra)
            note = (f"{self.folder}: taking over the stale lock of {_describe(info)}: it is no longer running; "
                    "the files it wrote are reused where they are valid")
        self._write(fd)
        return note

    def _write(self, fd: int) -> None:
        self.info = LockInfo(pid=os.getpid(), host=socket.gethostname(), started=_now(), command=self.command)
        data = (json.dumps(self.info.model_dump(mode="json"), indent=1) + "\n").encode("utf-8")
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)
        self._fd = fd

    # -- releasing

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            try:
                if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    os.unlink(self.path)  # while still holding it: a waiting opener then retries
            except OSError:
                pass
        finally:
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        note = self.acquire()
        if note:
            log.warning(note)
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_holder(path: Path | str) -> Optional[LockInfo]:
    """The live holder of the lock at ``path`` (a placeholder :class:`LockInfo` when it has not
    written its details yet), or None when no live process holds it."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        data = RunLock._read(fd)
        info = _read_info(data, path)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return info or LockInfo(pid=0, host="?", started="?", command="")
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EACCES):
                    return info or LockInfo(pid=0, host="?", started="?", command="")
                if e.errno not in _NO_FLOCK:
                    raise
            else:
                return None  # free (a stale file at most)
        if info is None:
            return None
        if info.host == socket.gethostname() and _pid_alive(info.pid) is False:
            return None
        return info
    finally:
        os.close(fd)


def busy_message(folder: Path | str, info: LockInfo, doing: str) -> str:
    """One line: ``folder`` is being written by ``info``'s run, so ``doing`` must wait."""
    return f"{folder} is being written by a run now ({_describe(info)}); {doing} after it has finished"
