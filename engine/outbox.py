"""The directory sink: documents land in the outbox by atomic rename, never half-written.

A file is written under a temporary name (``.NAME.partial``), flushed and fsynced, renamed
into place, and the directory is fsynced: after a crash a file in the outbox is complete,
and a ``.partial`` file is garbage that the next run removes.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import DeliveryError

PARTIAL = ".partial"


class Outbox:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def prepare(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeliveryError(f"cannot create the outbox {self.directory}: {exc.strerror}") from None
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise DeliveryError(f"the outbox {self.directory} is not writable; fix its permissions "
                                f"or give another --outbox")
        for stale in self.directory.glob(f".*{PARTIAL}"):
            stale.unlink(missing_ok=True)

    def path(self, name: str) -> Path:
        """The file ``name`` in the outbox (an absolute path is taken as it is)."""
        return self.directory / name

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def checksum(self, name: str) -> str:
        h = hashlib.sha256()
        with self.path(name).open("rb") as f:
            while chunk := f.read(1 << 16):
                h.update(chunk)
        return h.hexdigest()

    @contextmanager
    def write(self, name: str) -> Iterator[BinaryIO]:
        """Yield a file to write; on success it appears as ``name`` at once, whole."""
        if "/" in name or name.startswith("."):
            raise DeliveryError(f"file name {name!r} must be a plain name inside the outbox")
        final = self.path(name)
        tmp = self.directory / f".{name}{PARTIAL}"
        try:
            with tmp.open("wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            _rename_no_replace(tmp, final)
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except FileExistsError:
            tmp.unlink(missing_ok=True)
            raise DeliveryError(f"cannot write {final}: a file of that name appeared in the outbox "
                                f"(is another mapper writing there?); it was left as it is, nothing "
                                f"was lost, the orders are delivered by the next run") from None
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise DeliveryError(f"cannot write {final}: {exc.strerror or exc}; nothing was lost, "
                                f"the orders are delivered by the next run") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


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
        if final.exists():
            raise FileExistsError(str(final)) from None
        os.replace(tmp, final)
        return
    os.unlink(tmp)
