"""The XSD check of written records in a helper process, on the machine's other core.

Parsing and validating a record's text is about a fifth of the time per order, and it
depends on nothing but the text: :class:`CheckProcess` hands batches of texts to a child
process (``python -m engine.xsd_process XSD``), which checks them with the same
:class:`~engine.xsd.Validator` and answers, per text, nothing or the refusal (reason and
field). The parent converts the next batch meanwhile. A thread would not do: lxml holds
the GIL between its calls often enough that two threads ran no faster than one.

The pipe carries, per batch: a 4-byte count, then per text a 4-byte length and the bytes;
the answer is one line of JSON, a list with ``null`` or ``[reason, field]`` per text.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

from .errors import MapperError, OrderError

_COUNT = struct.Struct("<I")

#: A refusal's reason is cut to this many characters in the answer (lxml's messages are
#: short; this keeps one batch's answer well inside a pipe buffer, so neither side can block).
MAX_REASON = 1000


#: The pipe buffer asked for (Linux allows up to /proc/sys/fs/pipe-max-size, 1 MB by default);
#: a batch of 32 full-size records is about 110 KB.
PIPE_SIZE = 1 << 20


class CheckProcess:
    """The parent's side: ``submit`` a batch, then ``result`` it (one batch at a time)."""

    def __init__(self, xsd_path: Path):
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])  # where the engine package is
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._proc = subprocess.Popen([sys.executable, "-m", "engine.xsd_process", str(xsd_path)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      env=env)
        # room for a whole batch in the pipe: writing the next batch must not wait for the
        # child to finish the one before (at 64 KB it did: ~10% of the time at 10,000 orders)
        try:
            import fcntl
            fcntl.fcntl(self._proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except (ImportError, AttributeError, OSError):  # not Linux, or above the system's limit: slower only
            pass

    def submit(self, texts: list[bytes]) -> None:
        frame = [_COUNT.pack(len(texts))]
        for text in texts:
            frame += (_COUNT.pack(len(text)), text)
        try:
            self._proc.stdin.write(b"".join(frame))
            self._proc.stdin.flush()
        except OSError:  # it stopped: result() says why
            pass

    def result(self) -> list[OrderError | None]:
        line = self._proc.stdout.readline()
        if not line:
            raise self._stopped()
        return [None if r is None else OrderError(r[0], field=r[1]) for r in json.loads(line)]

    def close(self) -> None:
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc.stdout.close()
        self._proc.stderr.close()

    def _stopped(self) -> MapperError:
        self._proc.stdin.close()
        code = self._proc.wait()
        detail = self._proc.stderr.read().decode("utf-8", "replace").strip().splitlines()
        last = f": {detail[-1]}" if detail else ""
        return MapperError(f"the XSD check's helper process stopped (exit code {code}){last}; "
                           f"nothing of this batch was delivered: run again")


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    data = stream.read(n)
    return data if len(data) == n else None


def serve(xsd_path: str, stdin: BinaryIO, stdout: BinaryIO) -> None:
    """The child's side: answer batches until the parent closes the pipe."""
    from .xsd import Validator

    validator = Validator(Path(xsd_path))
    while (head := _read_exactly(stdin, 4)) is not None:
        answers = []
        for _ in range(_COUNT.unpack(head)[0]):
            size = _read_exactly(stdin, 4)
            text = None if size is None else _read_exactly(stdin, _COUNT.unpack(size)[0])
            if text is None:
                raise SystemExit("the batch ended early")
            try:
                validator.check_text(text)
                answers.append(None)
            except OrderError as exc:
                answers.append([exc.reason[:MAX_REASON], exc.field])
        stdout.write(json.dumps(answers).encode("utf-8") + b"\n")
        stdout.flush()


if __name__ == "__main__":
    serve(sys.argv[1], sys.stdin.buffer, sys.stdout.buffer)
