"""The XSD check of written records in a helper process, on the machine's other core.

Parsing and validating a record's text is about a fifth of the time per order, and it
depends on nothing but the text: :class:`XsdChecker` hands batches of texts to a child
process, which checks them with the same :class:`~engine.output.xsd.Validator` and answers, per
text, nothing or the refusal (reason and field). The parent converts the next batch
meanwhile. A thread would not do: lxml holds the GIL between its calls often enough that
two threads ran no faster than one.

If the helper cannot start, or stops, the batches it holds and all later ones are checked
here instead: slower, never different.

The pipe carries, per batch: a 4-byte count, then per text a 4-byte length and the bytes;
the answer is one line of JSON, a list with ``null`` or ``[reason, field]`` per text. The
child reads its input on a thread of its own, so the parent's next batch never waits for
the child to be rid of its last answer (however long the reasons), and neither side can
block the other.

The child is started isolated (``python -I``: no current directory or user site on its
import path, no PYTHON* variables) with only the environment variables a process needs to
run: none of the mapping's secrets.
"""

from __future__ import annotations

import json
import os
import queue
import struct
import subprocess
import sys
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import BinaryIO

from engine.errors import OrderError
from engine.output.xsd import Validator

_COUNT = struct.Struct("<I")

#: The pipe buffer asked for (Linux allows up to /proc/sys/fs/pipe-max-size, 1 MB by default):
#: a batch of 32 full-size records, about 110 KB, then goes in with one write.
PIPE_SIZE = 1 << 20

#: What the child inherits of the environment: enough to start Python, nothing more.
_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "LD_LIBRARY_PATH", "TMPDIR", "SYSTEMROOT")

_CHILD = ("import sys; sys.path.insert(0, sys.argv[1]); from engine.output.xsd_process import serve; "
          "serve(sys.argv[2], sys.stdin.buffer, sys.stdout.buffer)")


class HelperStopped(Exception):
    """The helper process ended or its answer did not make sense."""


class XsdChecker:
    """``submit`` batches, then ``result`` them in the same order (at most two outstanding)."""

    def __init__(self, validator: Validator):
        self._here = validator
        self._batches: deque[list[bytes]] = deque()  # submitted, not yet answered
        self._stderr = tempfile.TemporaryFile()
        root = str(Path(__file__).resolve().parents[2])  # where the engine package is
        env = {k: os.environ[k] for k in _ENVIRONMENT if k in os.environ}
        try:
            self._proc: subprocess.Popen | None = subprocess.Popen(
                [sys.executable, "-I", "-c", _CHILD, root, str(validator.xsd_path)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env)
        except OSError:
            self._proc = None
            return
        assert self._proc.stdin is not None  # stdin=PIPE
        try:
            import fcntl
            fcntl.fcntl(self._proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except (ImportError, AttributeError, OSError):  # not Linux, or above the limit: slower only
            pass

    @property
    def in_helper(self) -> bool:
        """Whether the helper process is (still) doing the checks."""
        return self._proc is not None

    def submit(self, texts: list[bytes]) -> None:
        self._batches.append(texts)
        if self._proc is None:
            return
        frame = [_COUNT.pack(len(texts))]
        for text in texts:
            frame += (_COUNT.pack(len(text)), text)
        stdin = self._proc.stdin
        assert stdin is not None  # stdin=PIPE (see __init__)
        try:
            stdin.write(b"".join(frame))
            stdin.flush()
        except OSError:
            self._end(kill=True)  # gone or confused: from now on every check is done here

    def result(self) -> list[OrderError | None]:
        """The refusal of each text of the oldest outstanding batch, or None where it passes."""
        texts = self._batches.popleft()
        if self._proc is not None:
            try:
                answers = self._answer(len(texts))
                return [None if a is None else OrderError(a[0], field=a[1]) for a in answers]
            except HelperStopped:
                self._end(kill=True)
        return [self._check_here(text) for text in texts]

    def close(self) -> None:
        if self._proc is not None:
            self._end(kill=bool(self._batches))  # answers nobody will read: no need to wait for them
        self._stderr.close()

    def _answer(self, count: int) -> list:
        assert self._proc is not None and self._proc.stdout is not None  # result(): the helper runs; a PIPE
        line = self._proc.stdout.readline()
        try:
            answers = json.loads(line)
        except ValueError:
            raise HelperStopped from None
        if not isinstance(answers, list) or len(answers) != count:
            raise HelperStopped
        return answers

    def _check_here(self, text: bytes) -> OrderError | None:
        try:
            self._here.check_text(text)
        except OrderError as exc:
            return exc
        return None

    def _end(self, kill: bool) -> None:
        proc, self._proc = self._proc, None
        assert proc is not None and proc.stdin is not None and proc.stdout is not None  # called while it runs; PIPEs
        try:
            proc.stdin.close()
        except OSError:
            pass
        if kill:
            proc.kill()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


# ---------------------------------------------------------------------------- the child


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    data = stream.read(n)
    return data if len(data) == n else None


def _batches(stdin: BinaryIO, into: queue.Queue) -> None:
    """On the child's reading thread: every batch as a list of texts, then None."""
    try:
        while (head := _read_exactly(stdin, 4)) is not None:
            texts = []
            for _ in range(_COUNT.unpack(head)[0]):
                size = _read_exactly(stdin, 4)
                text = None if size is None else _read_exactly(stdin, _COUNT.unpack(size)[0])
                if text is None:
                    return  # the batch ended early: the parent is gone
                texts.append(text)
            into.put(texts)
    finally:
        into.put(None)


def serve(xsd_path: str, stdin: BinaryIO, stdout: BinaryIO) -> None:
    """The child's side: answer batches until the parent closes the pipe."""
    validator = Validator(Path(xsd_path))
    batches: queue.Queue = queue.Queue()
    threading.Thread(target=_batches, args=(stdin, batches), daemon=True).start()
    while (texts := batches.get()) is not None:
        answers: list[list[str | None] | None] = []  # per text: None, or [reason, field]
        for text in texts:
            try:
                validator.check_text(text)
                answers.append(None)
            except OrderError as exc:
                answers.append([exc.reason, exc.field])
        stdout.write(json.dumps(answers).encode("utf-8") + b"\n")
        stdout.flush()
