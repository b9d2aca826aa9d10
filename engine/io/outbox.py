"""The directory sink: documents land in the outbox by atomic rename, never half-written.

A file is written under a temporary name (``.NAME.partial``), flushed and fsynced, its
checksum handed to the caller (who records it before anything else happens), renamed into
place, and the directory is fsynced: after a crash a file in the outbox is complete, and a
``.partial`` file is garbage that the next run removes.

The outbox is locked for a whole run (``.mapper-outbox.lock``, an ``flock`` the kernel releases
when its holder dies), and the lock file names the state it belongs to: two runs never write
one outbox at once, and a run of another state refuses it (each state would deliver the other's
orders again).
Files carry customer data: they are written with mode 0600 (``sink.directory.mode``) in a
directory created 0700.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from engine.errors import DeliveryError, MapperError

PARTIAL = ".partial"
LOCK_NAME = ".mapper-outbox.lock"
DEFAULT_MODE = 0o600


class OutboxBusy(MapperError):
    """Another run holds the outbox (exit 4), or it belongs to another state (exit 2)."""

    def __init__(self, message: str, exit_code: int = 4):
        super().__init__(message)
        self.exit_code = exit_code


class Outbox:
    def __init__(self, directory: str | Path, *, mode: int = DEFAULT_MODE, wait_seconds: float = 0.0,
                 owner: str = ""):
        """``owner`` says who locks it (the state's location), for the message of a waiting run."""
        self.directory = Path(directory)
        self.mode = mode
        self.wait_seconds = wait_seconds
        self.owner = owner
        self._lock_fd: int | None = None

    @classmethod
    def for_mapping(cls, mapping, directory: str | Path, *, wait_seconds: float = 0.0,
                    owner: str = "") -> "Outbox":
        """The outbox with the file mode the mapping's ``sink.directory.mode`` sets."""
        mode = mapping.sink.directory.mode
        return cls(directory, mode=int(str(mode), 8), wait_seconds=wait_seconds, owner=owner)

    # ---- the run's lock
    def prepare(self) -> None:
        """Create the outbox (0700), lock it for this run, remove partials of dead runs."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise DeliveryError(f"cannot create the outbox {self.directory}: {exc.strerror}") from None
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise DeliveryError(f"the outbox {self.directory} is not writable; fix its permissions "
                                f"or give another --outbox")
        self._lock()
        for stale in self.directory.glob(f".*{PARTIAL}"):
            stale.unlink(missing_ok=True)

    def _lock(self) -> None:
        if self._lock_fd is not None:
            return
        import fcntl
        path = self.directory / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:      # e.g. the lock file replaced by a symbolic link
            raise DeliveryError(f"cannot lock the outbox: {path}: {exc.strerror}; remove it if it is "
                                f"not a plain file") from None
        deadline = time.monotonic() + max(0.0, self.wait_seconds)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise OutboxBusy(
                        f"the outbox {self.directory} is in use by another run ({holder}); gave up "
                        f"after waiting {self.wait_seconds:g}s. Two states must never share one "
                        f"outbox: give each its own --outbox") from None
                time.sleep(0.05)
        last = _read(fd)
        if self.owner and last.get("state") and last["state"] != self.owner:
            os.close(fd)
            raise OutboxBusy(
                f"the outbox {self.directory} belongs to the state {last['state']}, not to "
                f"{self.owner}: two states writing one outbox would each deliver the other's "
                f"orders again. Give this state its own --outbox (if the state was moved, remove "
                f"{path} once)", exit_code=2)
        payload = {"pid": os.getpid(), "host": socket.gethostname(), "state": self.owner,
                   "since": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
        _write(fd, payload)
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            _write(self._lock_fd, {"state": self.owner})   # the owner stays; the run is gone
            os.close(self._lock_fd)             # closing the descriptor releases the flock
            self._lock_fd = None

    # ---- files
    def path(self, name: str) -> Path:
        """The file ``name`` in the outbox (an absolute path is taken as it is)."""
        return self.directory / name

    def exists(self, name: str) -> bool:
        """Whether the name is taken, also by a (dangling) symbolic link."""
        return os.path.lexists(self.path(name))

    def checksum(self, name: str) -> str:
        return file_checksum(self.path(name))

    @contextmanager
    def write(self, name: str, before_rename: Callable[[str], None] = lambda checksum: None
              ) -> Iterator[BinaryIO]:
        """Yield a file to write; on success it appears as ``name`` at once, whole.

        ``before_rename(checksum)`` is called with the written file's SHA-256 before it is
        renamed into place (the caller records it: the proof that the file is its own).
        """
        if "/" in name or name.startswith("."):
            raise DeliveryError(f"file name {name!r} must be a plain name inside the outbox")
        final = self.path(name)
        tmp = self.directory / f".{name}{PARTIAL}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, self.mode)
            os.fchmod(fd, self.mode)                 # whatever the umask says
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            before_rename(file_checksum(tmp))
            _rename_no_replace(tmp, final)
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except FileExistsError:
            tmp.unlink(missing_ok=True)
            what = ("a symbolic link" + (" to nothing" if not final.exists() else "")
                    if final.is_symlink() else "a file")
            raise DeliveryError(f"cannot write {final}: {what} of that name appeared in the outbox "
                                f"(is another mapper writing there?); it was left as it is, nothing "
                                f"was lost, the orders are delivered by the next run") from None
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise DeliveryError(f"cannot write {final}: {exc.strerror or exc}; nothing was lost, "
                                f"the orders are delivered by the next run") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def file_checksum(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 16):
            h.update(chunk)
    return h.hexdigest()


def _read(fd: int) -> dict:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write(fd: int, data: dict) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(data).encode(), 0)


def _read_holder(fd: int) -> str:
    data = _read(fd)
    if "pid" not in data:
        return "another process"
    return (f"pid {data['pid']} on {data.get('host', '?')}, state {data.get('state') or '?'}, "
            f"since {data.get('since', '?')}")


def _rename_no_replace(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final`` atomically, never over an existing file (FileExistsError).

    A hard link is atomic and refuses an existing target; where the file system has no hard
    links, fall back to a check and ``os.replace``.
    """
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise
    except OSError:
        if os.path.lexists(final):
            raise FileExistsError(str(final)) from None
        os.replace(tmp, final)
        return
    os.unlink(tmp)
