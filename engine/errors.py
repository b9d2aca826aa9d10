"""Exceptions the engine raises, each carrying what a person needs to act on it."""

from __future__ import annotations


class MapperError(Exception):
    """Base class: a failure with a message meant for people."""

    exit_code = 1


class MappingError(MapperError):
    """The mapping file is wrong: points at FILE:LINE:COL."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 column: int | None = None, hint: str | None = None):
        self.file, self.line, self.column, self.hint = file, line, column, hint
        self.message = message
        super().__init__(self.format())

    def format(self) -> str:
        where = ""
        if self.file:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
                if self.column is not None:
                    where += f":{self.column}"
            where += ": "
        hint = f" ({self.hint})" if self.hint else ""
        return f"{where}{self.message}{hint}"


class MappingErrors(MapperError):
    """Several mapping errors found in one pass; reported together."""

    exit_code = 2

    def __init__(self, errors: list[MappingError]):
        self.errors = errors
        super().__init__("\n".join(e.format() for e in errors))


class OrderError(MapperError):
    """One record cannot be converted: it goes to quarantine with this reason."""

    def __init__(self, reason: str, *, field: str | None = None):
        self.reason = reason
        self.field = field
        super().__init__(reason)


class SourceError(MapperError):
    """The source (shop API, fixture directory) failed as a whole."""


class DeliveryError(MapperError):
    """The destination could not take the document."""


class ConfigError(MapperError):
    """The environment or the command line is wrong (a missing or malformed setting)."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None):
        self.message, self.hint = message, hint
        super().__init__(f"{message} ({hint})" if hint else message)


def in_words(exc: BaseException) -> str:
    """What went wrong, for a bookkeeper: the exception's meaning, never its class name."""
    import decimal
    if isinstance(exc, (decimal.DivisionByZero, ZeroDivisionError)):
        return "a division by zero"
    if isinstance(exc, (decimal.Overflow, OverflowError)):
        return "a number too large to compute with"
    if isinstance(exc, decimal.InvalidOperation):
        return "a number that cannot be computed with (too large, or not a number)"
    if isinstance(exc, RecursionError):
        return "too deeply nested (recursion)"
    if isinstance(exc, MemoryError):
        return "too large to hold in memory"
    if isinstance(exc, KeyError):
        return f"no key {exc.args[0]!r}" if exc.args else "a missing key"
    if isinstance(exc, IndexError):
        return "a position past the end of a list"
    text = " ".join(str(exc).split())
    if isinstance(exc, TypeError):       # "for -: 'str' and 'decimal.Decimal'": say what they are
        for python, words in _TYPE_WORDS.items():
            text = text.replace(python, words)
    return text or "an unexpected error"


_TYPE_WORDS = {"'decimal.Decimal'": "a number", "'Decimal'": "a number", "'int'": "a number",
               "'float'": "a number", "'str'": "text", "'NoneType'": "nothing", "'list'": "a list",
               "'dict'": "a group of fields", "'bool'": "true/false"}
