"""The filters and tests a mapping's templates may use.

Each is a plain function of values: no file, network or environment access.
"""

from __future__ import annotations

from typing import Any, Callable

import re
import unicodedata
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from zoneinfo import ZoneInfo

from jinja2.filters import do_batch as _jinja_batch, do_center as _jinja_center, do_format as _jinja_format
from jinja2.filters import do_indent as _jinja_indent, sync_do_slice as _jinja_slice
from jinja2.filters import do_replace as _jinja_replace, sync_do_join as _jinja_join
from jinja2.utils import pass_eval_context as _pass_eval_context
from jinja2.sandbox import SecurityError

from engine.convert import money

#: Typographic quotes that Asperion's import refuses raw, and their plain forms.
DEFAULT_REPLACEMENTS = {"„": '"', "“": '"', "”": '"', "‟": '"', "‚": "'", "‘": "'", "’": "'", "‛": "'"}

# XML 1.0 allows tab, LF, CR and everything from U+0020 except surrogates, U+FFFE and U+FFFF.
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_SPACES = re.compile(r"\s+")


def strip_control(text: str) -> str:
    return _XML_FORBIDDEN.sub("", text)


def replaces_only_non_ascii(replacements: dict[str, str]) -> bool:
    """Whether no replacement can match in ASCII text (so ASCII text needs none)."""
    return all(old and not old.isascii() for old in replacements)


_DEFAULT_ITEMS = tuple(DEFAULT_REPLACEMENTS.items())
_DEFAULT_NON_ASCII = replaces_only_non_ascii(DEFAULT_REPLACEMENTS)

# Fast paths below, same results: a pure-ASCII text cannot contain a non-ASCII quote;
# str.isprintable() is False for every character _XML_FORBIDDEN removes (Cc, Cs, and the
# non-characters U+FFFE/U+FFFF), so printable text has none; and " ".join(t.split())
# equals _SPACES.sub(" ", t).strip() (both use Python's definition of white space).


def clean(value: object, replacements: dict[str, str] | None = None) -> str:
    """Plain text for an invoice: quotes plain, forbidden characters out, spaces collapsed."""
    if value is None:
        return ""
    text = str(value)
    if replacements is None and _DEFAULT_NON_ASCII and text.isascii():
        pass
    else:
        for old, new in (replacements or DEFAULT_REPLACEMENTS).items():
            if old in text:
                text = text.replace(old, new)
    if not text.isprintable():
        text = strip_control(text)
    return " ".join(text.split())


def normalise_email(value: object) -> str:
    """Trimmed and lower case: the key customers are recognised by."""
    return "" if value is None else str(value).strip().lower()


def fold_name(value: object) -> str:
    """Case-folded, accents stripped, spaces collapsed: for 'materially different' names."""
    text = "" if value is None else str(value)
    if not text.isascii():  # ASCII has no accents to strip, and NFKD leaves it as it is
        text = unicodedata.normalize("NFKD", text)
        text = "".join(c for c in text if not unicodedata.combining(c))
    return _SPACES.sub(" ", text).strip().casefold()


def to_decimal(value: object) -> Decimal:
    return money.to_decimal(value)


def money_plain(value: object, places: int = 2) -> str:
    """``1043.45``: for amounts in the XML."""
    if places == 2 and type(value) is Decimal:  # the common case, one call instead of five
        text = str(value.quantize(money.CENT, ROUND_HALF_UP))
        if "E" not in text:  # never, at two places; NaN and Infinity are written as format() does
            return text
    return money.plain(money.to_decimal(value), places)


def unit_price(value: object, places: int = 4) -> str:
    """Up to four decimals (``8.2231``), at least two."""
    return money.trim(money.to_decimal(value), places)


def quantity(value: object) -> str:
    return money.quantity(money.to_decimal(value))


def dutch_money(value: object, symbol: str = "€") -> str:
    """``€ 1.043,45``: as Asperion's import screen shows amounts."""
    return money.dutch(money.to_decimal(value), symbol)


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def parse_datetime(value: object) -> datetime:
    """An ISO 8601 timestamp (``2026-11-26T21:00:00Z``); naive ones are taken as UTC."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    else:
        text = str(value).strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def local_date(value: object, zone: str = "Europe/Amsterdam") -> str:
    """The calendar date (``YYYY-MM-DD``) of a UTC timestamp in ``zone``."""
    return parse_datetime(value).astimezone(_zone(zone)).date().isoformat()


def quarter(value: object) -> str:
    """The calendar quarter of a ``YYYY-MM-DD`` date or a timestamp: ``'2026-02-14' | quarter``
    is ``2026-Q1`` (VAT periods; the texts sort as the quarters do)."""
    day = date.fromisoformat(value) if isinstance(value, str) and len(value) == 10 else parse_datetime(value).date()
    return f"{day.year}-Q{(day.month - 1) // 3 + 1}"


def date_format(value: object, fmt: str = "%d-%m-%Y") -> str:
    """Reformat a ``YYYY-MM-DD`` date or a timestamp: ``'2014-12-21' | date_format('%m-%Y')``."""
    if isinstance(value, str) and len(value) == 10:
        return _reformat_day(value, str(fmt))
    return parse_datetime(value).strftime(fmt)


@lru_cache(maxsize=4096)
def _reformat_day(day: str, fmt: str) -> str:
    # a day's text for a format never changes, and a batch has few distinct days
    return date.fromisoformat(day).strftime(fmt)


def utc_timestamp(value: object) -> str:
    return parse_datetime(value).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_NL_POSTCODE = re.compile(r"^\s*(\d{4})\s*([A-Za-z]{2})\s*$")


def postcode(value: object, country: object = "NL") -> str:
    """Dutch postcodes as ``1234 AB``; others trimmed and upper-cased."""
    text = "" if value is None else str(value)
    if (country or "NL") == "NL":
        m = _NL_POSTCODE.match(text)
        if m:
            return f"{m.group(1)} {m.group(2).upper()}"
    return _SPACES.sub(" ", text).strip().upper()


def compact(value: object) -> str:
    """Upper case without spaces, dots or dashes: VAT and KvK numbers."""
    return re.sub(r"[\s.\-]", "", "" if value is None else str(value)).upper()


@lru_cache(maxsize=256)
def _pattern(pattern: str):
    """A pattern compiled by RE2: its time is linear in the text, whatever the pattern (no
    catastrophic backtracking as with ``re``: ``(a+)+$`` cannot hang a run)."""
    import re2
    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(f"the pattern {pattern!r} is not one this engine runs ({detail}); "
                         f"back-references and look-arounds are not supported") from None


def regex_match(value: object, pattern: str) -> bool:
    return _pattern(str(pattern)).fullmatch("" if value is None else str(value)) is not None


FILTERS: dict[str, Callable[..., Any]] = {
    "clean": clean,
    "normalise_email": normalise_email,
    "normalize_email": normalise_email,
    "fold_name": fold_name,
    "decimal": to_decimal,
    "money": money_plain,
    "unit_price": unit_price,
    "quantity": quantity,
    "dutch_money": dutch_money,
    "local_date": local_date,
    "quarter": quarter,
    "date_format": date_format,
    "utc_timestamp": utc_timestamp,
    "postcode": postcode,
    "compact": compact,
}

#: Filters whose text is a number as ``format(d, "f")`` writes it (digits, a sign, a point;
#: ``NaN``/``Infinity`` at worst): printable ASCII without spaces or ``& < >``, which cleaning
#: and escaping leave as it is when no replacement has an ASCII key (see engine/output/render.py).
PLAIN_NUMBER_FILTERS = frozenset({"money", "unit_price", "quantity"})

#: The longest text (or list) a template may build with ``*``, ``%``, ``format`` or padding:
#: Jinja's sandbox itself puts no bound on ``'a' * 10**10``.
MAX_TEXT = 1_000_000

# a printf conversion: %[(key)][flags][width][.precision]type
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def check_size(n: int, what: str) -> None:
    if n > MAX_TEXT:
        raise SecurityError(f"{what} of {n} characters or items is longer than a mapping may build ({MAX_TEXT})")


def check_printf(fmt: str, args: object = None) -> None:
    """Refuse ``'%999999999d' % x`` (and ``*`` widths) before Python builds the text."""
    if "%" not in fmt:
        return
    for m in _PRINTF.finditer(fmt):
        for number in m.groups():
            if number == "*":
                raise SecurityError("a '*' width or precision is not allowed in a mapping's % format")
            if number is not None:
                check_size(int(number), "a % format width or precision")


def do_format(value: Any, *args: Any, **kwargs: Any) -> str:
    """Jinja's ``format`` filter (``'%s, %s' | format(a, b)``), with bounded widths."""
    check_printf(str(value))
    return _jinja_format(value, *args, **kwargs)


def center(value: Any, width: int = 80) -> str:
    """Jinja's ``center`` filter, bounded."""
    if isinstance(width, int):
        check_size(width, "centred text")
    return _jinja_center(value, width)


def indent(value: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    """Jinja's ``indent`` filter, bounded."""
    if isinstance(width, int):
        check_size(width, "an indent")
    return _jinja_indent(value, width, first, blank)


def batch(value: Any, linecount: int, fill_with: object = None):
    """Jinja's ``batch`` filter, bounded (it pads the last batch to ``linecount`` items)."""
    if isinstance(linecount, int):
        check_size(linecount, "a batch")
    return _jinja_batch(value, linecount, fill_with)


def slice_(value: Any, slices: int, fill_with: object = None):
    """Jinja's ``slice`` filter, bounded."""
    if isinstance(slices, int):
        check_size(slices, "a number of slices")
    return _jinja_slice(value, slices, fill_with)


@_pass_eval_context
def join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
    """Jinja's ``join`` filter, bounded: the length is checked before the text is built."""
    items = list(value)
    if attribute is None:
        check_size(sum(len(str(x)) for x in items) + len(str(d)) * max(0, len(items) - 1), "joined text")
        return _jinja_join(eval_ctx, items, d)
    text = _jinja_join(eval_ctx, items, d, attribute)
    check_size(len(text), "joined text")
    return text


@_pass_eval_context
def replace(eval_ctx: Any, s: Any, old: Any, new: Any, count: Any = None) -> str:
    """Jinja's ``replace`` filter, bounded: ``'aaaa' | replace('a', long_text)`` is refused
    before it is built."""
    text, old_s, new_s = str(s), str(old), str(new)
    n = text.count(old_s) if old_s else len(text) + 1
    if isinstance(count, int) and count >= 0:
        n = min(n, count)
    check_size(len(text) + n * max(0, len(new_s) - len(old_s)), "replaced text")
    return _jinja_replace(eval_ctx, s, old, new, count)


FILTERS.update({"format": do_format, "center": center, "indent": indent, "batch": batch, "slice": slice_,
                "join": join, "replace": replace})


class NoMatch(LookupError):
    """Raised by ``one``: its message is the mapping's own, shown as it is."""


def valid_on(items: Any, day: object, valid_from: str = "validFrom", valid_until: str = "validUntil") -> list:
    """The items whose [valid_from, valid_until] range (null = open) holds ``day`` (YYYY-MM-DD)."""
    text = str(day)[:10]
    out = []
    for item in items or ():
        start, end = item.get(valid_from), item.get(valid_until)
        if start and str(start)[:10] > text:
            continue
        if end and str(end)[:10] < text:
            continue
        out.append(item)
    return out


def one(items: Any, message: str = "nothing matched") -> Any:
    """The first item, or a failure with ``message`` (the record is quarantined with it)."""
    for item in items or ():
        return item
    raise NoMatch(message)


FILTERS.update({"valid_on": valid_on, "one": one})

TESTS = {
    "matching": regex_match,
}


def xml_cleaner(replacements: dict[str, str], escape: Callable[[str], str] | None = None):
    """What every text in the output goes through, for one replacement table: the replacements
    (plain quotes), no characters XML forbids, stripped; with ``escape``, a cleaned text holding
    ``& < >`` or a carriage return goes through it."""
    items = tuple(replacements.items())
    skip_ascii = replaces_only_non_ascii(replacements)

    def clean_text(text: str) -> str:
        if not (skip_ascii and text.isascii()):
            for old, new in items:
                if old in text:
                    text = text.replace(old, new)
        if not text.isprintable():
            text = _XML_FORBIDDEN.sub("", text)
        text = text.strip()
        if escape is not None and ("&" in text or "<" in text or ">" in text or "\r" in text):
            return escape(text)
        return text

    return clean_text
