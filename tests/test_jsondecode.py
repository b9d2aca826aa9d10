"""engine.io.jsondecode.loads: the standard library's ``json.loads(data, parse_float=Decimal)``, only faster.

Same values, same types (int stays int, every fraction a Decimal with the text's own
exponent), same errors (``json.JSONDecodeError`` with line and column, ``UnicodeDecodeError``),
for the fixture shop, the shared CCV samples, small hand-written documents and a few
hundred damaged copies of the fixtures; and through the fixture source, a broken file is
a BrokenRecord naming the file and the position while its neighbours still come through.
"""

from __future__ import annotations

import json
import os
import random
from decimal import Decimal

import pytest

from helpers import FIXTURES, ROOT
from engine.io import jsondecode
from engine.io.jsondecode import loads
from engine.io.sources import BrokenRecord
from engine.io.sources.fixtures import FixtureSource

SHARED = ROOT.parent / "shared" / "spec" / "ccvshop-samples"
BOM = b"\xef\xbb\xbf"


def _json_files():
    files = sorted(FIXTURES.glob("*.json"))
    if SHARED.is_dir() and os.access(SHARED, os.R_OK | os.X_OK):
        files += sorted(p for p in SHARED.glob("*.json") if os.access(p, os.R_OK))
    return files


FILES = _json_files()


def stdlib(data):
    return json.loads(data, parse_float=Decimal)


def typed(value):
    """The value with every leaf tagged by its type (bool apart from int), Decimals by their text,
    and the keys in their order: equal only if the trees are equal in every respect."""
    if isinstance(value, dict):
        return ("dict", [(k, typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    if isinstance(value, Decimal):
        return ("Decimal", str(value))
    return (type(value).__name__, value)


def outcome(fn, data):
    """What ``fn(data)`` gives: ('ok', typed value) or the exception's type and position."""
    try:
        return ("ok", typed(fn(data)))
    except json.JSONDecodeError as exc:
        return ("JSONDecodeError", exc.msg, exc.lineno, exc.colno, exc.pos)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return (type(exc).__name__,)


def _leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


# --------------------------------------------------------------------------- real documents


def test_the_fixture_files_are_found():
    assert len([p for p in FILES if p.parent == FIXTURES]) >= 25


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_files_decode_like_the_standard_library(path):
    data = path.read_bytes()
    want = typed(stdlib(data))
    assert typed(loads(data)) == want
    assert typed(loads(data.decode("utf-8"))) == want
    assert typed(loads(BOM + data)) == want  # a byte order mark is accepted


def test_fixtures_hold_both_ints_and_decimals():
    """Otherwise the comparison above would not be about numbers at all."""
    kinds = set()
    for path in FILES:
        kinds.update(type(leaf) for leaf in _leaves(loads(path.read_bytes())))
    assert {int, Decimal, str, bool}.issubset(kinds)
    assert float not in kinds


# --------------------------------------------------------------------------- numbers

NUMBERS = (b'{"a": 19.950, "b": 1, "c": -0.0, "d": 1e5, "e": 1.5E-3, "f": 0.10, "g": 100, "h": -0, '
           b'"i": 2.5e+2, "j": 1.0, "k": true, "l": null, "m": 0.1000000000000000000000000001, '
           b'"n": 123456789012345678901234567890.5, "o": 1E400, "p": 1.0E-0400, "q": [7, 7.0, 7e0]}')


def test_numbers_keep_their_type_and_their_text():
    doc = loads(NUMBERS)
    assert typed(doc) == typed(stdlib(NUMBERS))
    expect = {"a": "19.950", "c": "-0.0", "d": "1E+5", "e": "0.0015", "f": "0.10", "i": "2.5E+2", "j": "1.0",
              "m": "0.1000000000000000000000000001", "n": "123456789012345678901234567890.5", "o": "1E+400",
              "p": "1.0E-400"}
    for key, text in expect.items():
        assert type(doc[key]) is Decimal and str(doc[key]) == text, key
    assert doc["a"].as_tuple().exponent == -3
    for key in ("b", "g", "h"):
        assert type(doc[key]) is int
    assert (doc["b"], doc["g"], doc["h"]) == (1, 100, 0)
    assert doc["k"] is True and doc["l"] is None
    assert [type(v) for v in doc["q"]] == [int, Decimal, Decimal] and [str(v) for v in doc["q"][1:]] == ["7.0", "7"]


@pytest.mark.parametrize("digits", [19, 20, 21, 39, 40, 100, 309, 1000, 4300])
def test_big_integers_survive(digits):
    for sign in ("", "-"):
        text = sign + "9" * digits
        for data in (text, text.encode(), f'{{"n": [{text}, 1]}}'.encode()):
            value = loads(data)
            n = value if isinstance(value, int) else value["n"][0]
            assert type(n) is int and str(n) == text
    for n in (2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, -(2**64)):
        assert loads(str(n)) == n and type(loads(str(n))) is int


# --------------------------------------------------------------------------- encodings and errors


def test_byte_order_mark_is_accepted():
    assert typed(loads(BOM + b'{"a": 1.50, "b": [1]}')) == typed({"a": Decimal("1.50"), "b": [1]})
    assert loads(BOM + b" [] ") == []
    # in text (not bytes) the standard library refuses it, and so does loads
    assert outcome(loads, '\ufeff{"a": 1}') == outcome(stdlib, '\ufeff{"a": 1}')
    assert outcome(loads, '\ufeff{"a": 1}')[0] == "JSONDecodeError"


@pytest.mark.parametrize("data,line,column", [
    (b'{"a": 1,\n  "b": }', 2, 8),
    (b'{"a": 1,\n "b": 2,\n}', 3, 1),
    (b'\n\n  {"a": [1, 2,\n 3', 4, 3),
    (b'{"a": 1} x', 1, 10),
    (b"{'a': 1}", 1, 2),
    (b'[1, 2', 1, 6),
    (b'', 1, 1),
    (b'{"a": "tab\there"}', 1, 11),
    (b'{"a": 01}', 1, 8),
    (b'{"a": "\\x"}', 1, 8),
    (BOM + b'{\n"a":\n', 3, 1),
    ('{"é": [1,\n 2,, 3]}'.encode(), 2, 4),
])
def test_malformed_documents_raise_with_line_and_column(data, line, column):
    for doc in (data, data.decode("utf-8-sig")):
        with pytest.raises(json.JSONDecodeError) as info:
            loads(doc)
        assert (info.value.lineno, info.value.colno) == (line, column), doc
        assert outcome(loads, doc) == outcome(stdlib, doc)
    assert jsondecode.JSONDecodeError is json.JSONDecodeError


@pytest.mark.parametrize("data", [b'{"a": "\xff"}', b'{"a": "caf\xc3"}', b'"\xc3\x28"', b'\x80', b'["\xe2\x82"]'])
def test_invalid_utf8_raises_unicode_decode_error(data):
    with pytest.raises(UnicodeDecodeError):
        loads(data)


def test_damaged_fixtures_fail_or_succeed_exactly_like_the_standard_library():
    rng = random.Random(4711)
    docs = [p.read_bytes() for p in FILES]
    junk = [b"", b",", b"}", b"]", b'"', b"\\", b"\n", b"0", b".", b"e", b"-", b"\xff", b"\xc3", b"\x00", b"\t",
            b"NaN", b"1e999", b"\xef\xbb\xbf", b"99999999999999999999999", b"0.10"]
    failures = successes = 0
    for _ in range(600):
        data = bytearray(rng.choice(docs))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data) + 1)
            how = rng.random()
            if how < 0.3:
                del data[at:]
            elif how < 0.6:
                del data[at:at + rng.randint(1, 3)]
            else:
                data[at:at] = rng.choice(junk)
        data = bytes(data)
        got, want = outcome(loads, data), outcome(stdlib, data)
        assert got == want, data
        if want[0] == "ok":
            successes += 1
        else:
            failures += 1
    assert failures > 100 and successes > 20  # both kinds of outcome were exercised


# --------------------------------------------------------------------------- through the fixture source


def test_fixture_source_quarantines_a_broken_file_and_reads_its_neighbours(tmp_path):
    (tmp_path / "a_broken.json").write_bytes(b'{"id": 1,\n  "total_price": 12.50,\n  "orderrows": [}\n')
    (tmp_path / "b_good.json").write_bytes(b'{"id": 2, "total_price": 19.950, "big": 123456789012345678901234567890}')
    (tmp_path / "c_bom.json").write_bytes(BOM + b'{"id": 3, "total_price": 1.0}')
    (tmp_path / "d_bad_utf8.json").write_bytes(b'{"id": 4, "name": "\xff"}')
    (tmp_path / "e_list.json").write_bytes(b"[1, 2]")
    (tmp_path / "notes.txt").write_bytes(b"not json, not read")
    records = list(FixtureSource(tmp_path).records())
    assert len(records) == 5
    broken, good, bom, bad_utf8, a_list = records

    assert isinstance(broken, BrokenRecord) and broken.source_name == "a_broken.json"
    assert "a_broken.json" in broken.reason
    assert "not valid JSON at line 3 column 17" in broken.reason
    assert broken.reason.endswith("Expecting value")

    assert typed(good) == typed({"id": 2, "total_price": Decimal("19.950"), "big": 123456789012345678901234567890})
    assert str(good["total_price"]) == "19.950"
    assert typed(bom) == typed({"id": 3, "total_price": Decimal("1.0")})

    assert isinstance(bad_utf8, BrokenRecord) and bad_utf8.source_name == "d_bad_utf8.json"
    assert "cannot be read" in bad_utf8.reason and "utf-8" in bad_utf8.reason
    assert isinstance(a_list, BrokenRecord) and "holds list" in a_list.reason


def test_fixture_source_quarantines_numbers_and_nesting_python_refuses(tmp_path):
    # an int over Python's 4,300-digit conversion limit, and nesting deeper than the recursion
    # limit, used to stop the whole read; each is now one broken record and the rest go on
    (tmp_path / "a_huge_int.json").write_bytes(b'{"id": 1, "n": ' + b"9" * 4301 + b"}")
    (tmp_path / "b_deep.json").write_bytes(b'{"id": 2, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    (tmp_path / "c_good.json").write_bytes(b'{"id": 3}')
    huge, deep, good = list(FixtureSource(tmp_path).records())
    assert isinstance(huge, BrokenRecord) and huge.source_name == "a_huge_int.json"
    assert "not valid JSON" in huge.reason and "4300" in huge.reason
    assert isinstance(deep, BrokenRecord) and deep.source_name == "b_deep.json"
    assert "not valid JSON" in deep.reason
    assert good == {"id": 3}


def test_fixture_source_reads_big_empty_and_unreadable_files(tmp_path):
    # files are read with os.read in 64 KB pieces: a file of several pieces comes through
    # whole, an empty one is invalid JSON, a directory named like an order is one broken record
    rows = [{"id": i, "product_name": "x" * 900, "price": "9.95"} for i in range(300)]
    (tmp_path / "a_big.json").write_text(json.dumps({"id": 1, "orderrows": rows}))
    assert (tmp_path / "a_big.json").stat().st_size > 3 * (1 << 16)
    (tmp_path / "b_empty.json").write_bytes(b"")
    (tmp_path / "c_dir.json").mkdir()
    (tmp_path / "d_good.json").write_bytes(b'{"id": 4}')
    big, empty, directory, good = list(FixtureSource(tmp_path).records())
    assert big == {"id": 1, "orderrows": rows}
    assert isinstance(empty, BrokenRecord) and "not valid JSON at line 1 column 1" in empty.reason
    assert isinstance(directory, BrokenRecord) and "cannot be read" in directory.reason
    assert good == {"id": 4}
