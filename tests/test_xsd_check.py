"""The XSD check of each record, in-process and in the helper process (engine/output/xsd_process.py).

``Converter.convert_all`` checks the first records itself and the rest in a helper process
on the other core. Whichever does it, the outcomes must be exactly ``convert``'s: the same
records converted, the same ones quarantined with the same reason, in the same order, also
when the helper cannot start or stops midway (the checks are then done in-process).
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
from pathlib import Path

import pytest

from helpers import FIXTURES, MAPPING
from engine.convert import pipeline
from engine.errors import OrderError
from engine.config.mapping import load_mapping
from engine.convert.pipeline import Converted, Converter, Quarantined
from engine.io.sources.fixtures import FixtureSource
from engine.output import xsd_process
from engine.output.xsd import Validator
from engine.output.xsd_process import XsdChecker


@pytest.fixture()
def shop(tmp_path):
    """The fixture shop plus two orders only the XSD refuses (a currency, an e-mail address)."""
    directory = tmp_path / "shop"
    shutil.copytree(FIXTURES, directory)
    first = json.loads((FIXTURES / "01_ideal_21_registered.json").read_text())
    for name, change in (("90_currency.json", {"currency": "Euro"}),
                         ("91_email.json", {"customer": {**first["customer"], "email": "no-at-sign"}})):
        order = {**first, **change, "id": first["id"] + int(name[:2]), "ordernumber_full": f"XSD-{name[:2]}"}
        (directory / name).write_text(json.dumps(order))
    return directory


def _key(outcome):
    if isinstance(outcome, Converted):
        return ("converted", outcome.shop_id, outcome.number, outcome.xml)
    if isinstance(outcome, Quarantined):
        return ("quarantined", outcome.shop_id, outcome.number, outcome.reason, outcome.field)
    return (type(outcome).__name__, outcome.shop_id, outcome.number)


def _started(monkeypatch) -> list:
    """Every XsdChecker convert_all starts; each counts the batches its helper answered."""
    started = []

    class Spy(XsdChecker):
        def __init__(self, validator):
            super().__init__(validator)
            self.answered = 0
            started.append(self)

        def _answer(self, count):
            answers = super()._answer(count)
            self.answered += 1
            return answers

    monkeypatch.setattr(pipeline, "XsdChecker", Spy)
    return started


def _small_batches(monkeypatch) -> None:
    monkeypatch.setattr(pipeline, "CHECK_HERE", 3)
    monkeypatch.setattr(pipeline, "CHECK_BATCH", 4)


def _one_by_one(mapping, records) -> list:
    converter = Converter(mapping)
    return [_key(converter.convert(r)) for r in records]


def test_the_helper_gives_exactly_converts_outcomes(shop, monkeypatch):
    mapping = load_mapping(MAPPING)
    records = list(FixtureSource(shop).records())
    one_by_one = _one_by_one(mapping, records)
    refused = [k for k in one_by_one if k[0] == "quarantined" and k[3].startswith("the XSD refuses it")]
    assert {k[2] for k in refused} == {"XSD-90", "XSD-91"}
    assert "Currency" in refused[0][3] + refused[1][3] and "Email" in refused[0][3] + refused[1][3]

    _small_batches(monkeypatch)
    started = _started(monkeypatch)
    streamed = [_key(o) for o in Converter(mapping).convert_all(iter(records))]
    assert len(started) == 1 and started[0].answered == 6  # 24 records past the first 3, 4 at a time
    assert not started[0].in_helper  # closed
    assert streamed == one_by_one


def test_a_small_run_is_checked_in_process(monkeypatch):
    mapping = load_mapping(MAPPING)
    started = _started(monkeypatch)
    records = list(FixtureSource(FIXTURES).records())
    assert len(records) < pipeline.CHECK_HERE
    outcomes = list(Converter(mapping).convert_all(records))
    assert len(outcomes) == len(records) and started == []


@pytest.mark.parametrize("how", ["cannot start", "exits at once", "killed midway", "talks nonsense"])
def test_without_a_working_helper_the_checks_are_done_here_with_the_same_outcomes(how, shop, monkeypatch, tmp_path):
    mapping = load_mapping(MAPPING)
    records = list(FixtureSource(shop).records())
    one_by_one = _one_by_one(mapping, records)
    _small_batches(monkeypatch)
    started = _started(monkeypatch)
    if how == "cannot start":
        monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    elif how == "exits at once":
        monkeypatch.setattr(xsd_process, "_CHILD", "raise SystemExit(3)")
    elif how == "talks nonsense":
        monkeypatch.setattr(xsd_process, "_CHILD", "import sys; sys.stdin.buffer.read(4); print('[1]', flush=True); "
                                                   "sys.stdin.buffer.read()")
    outcomes = []
    for outcome in Converter(mapping).convert_all(iter(records)):
        outcomes.append(_key(outcome))
        if how == "killed midway" and len(outcomes) == 10:
            started[0]._proc.kill()
    assert outcomes == one_by_one
    assert started and not started[0].in_helper
    if how == "killed midway":
        assert started[0].answered >= 1  # it did work before it was killed


def test_a_source_that_fails_midway_first_yields_what_was_converted(shop, monkeypatch):
    mapping = load_mapping(MAPPING)
    records = list(FixtureSource(shop).records())[:14]
    _small_batches(monkeypatch)

    def failing():
        yield from records
        raise ConnectionError("the shop went away")

    got = []
    with pytest.raises(ConnectionError):
        for outcome in Converter(mapping).convert_all(failing()):
            got.append(_key(outcome))
    assert got == _one_by_one(mapping, records)


SMALL_XSD = """<?xml version="1.0"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">
  <xs:element name="Order"><xs:complexType><xs:sequence>
    <xs:element name="Amount" type="xs:decimal"/>
    <xs:element name="Note" type="xs:string" minOccurs="0"/>
  </xs:sequence></xs:complexType></xs:element>
</xs:schema>
"""


@pytest.mark.parametrize("pipe", [None, 4096])
def test_long_refusals_and_big_batches_cannot_block_either_side(pipe, tmp_path):
    # an answer larger than the pipe (2,000 refusals, ~200 KB of JSON) while the next batch
    # (32 x 40 KB) does not fit the pipe either: the child reads on a thread of its own, so
    # neither side waits for the other
    xsd = tmp_path / "s.xsd"
    xsd.write_text(SMALL_XSD)
    refused = [("<Order><Amount>" + "Ж" * 1000 + "</Amount></Order>").encode()] * 2000
    big = [("<Order><Amount>1</Amount><Note>" + "n" * 40000 + "</Note></Order>").encode()] * 32
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the helper and the engine block each other"))
    signal.alarm(60)
    checker = XsdChecker(Validator(xsd))
    try:
        if pipe:  # as where the pipe cannot be enlarged
            import fcntl
            for stream in (checker._proc.stdin, checker._proc.stdout):
                fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, pipe)
        checker.submit(refused)
        checker.submit(big)
        first, second = checker.result(), checker.result()
        assert checker.in_helper
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        checker.close()
    assert len(first) == 2000 and all(isinstance(r, OrderError) for r in first)
    assert len(json.dumps([[r.reason, r.field] for r in first])) > 1 << 17
    assert second == [None] * 32
    # a reason is passed on whole, as the in-process check words it
    with pytest.raises(OrderError) as here:
        Validator(xsd).check_text(refused[0])
    assert first[0].reason == here.value.reason


def test_the_helper_answers_per_text_in_order():
    mapping = load_mapping(MAPPING)
    converter = Converter(mapping)
    good = [o.xml for o in map(converter.convert, FixtureSource(FIXTURES).records()) if isinstance(o, Converted)][:2]
    bad = good[0].replace(b"<Currency>EUR</Currency>", b"<Currency>Euro</Currency>")
    assert bad != good[0]
    checker = XsdChecker(converter.validator)
    try:
        for _ in range(3):  # several batches through one process
            checker.submit([good[0], bad, good[1]])
            first, refusal, last = checker.result()
            assert first is None and last is None
            assert isinstance(refusal, OrderError) and refusal.field == "output.record"
            assert refusal.reason.startswith("the XSD refuses it: Order/Currency:")
        checker.submit([])
        assert checker.result() == []
        assert checker.in_helper
        proc = checker._proc
    finally:
        checker.close()
    assert proc.returncode == 0


def test_the_helper_has_no_secrets_and_imports_nothing_from_the_working_directory(tmp_path, monkeypatch):
    mapping = load_mapping(MAPPING)
    (tmp_path / "json.py").write_text("raise SystemExit('imported from the working directory')\n")
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "__init__.py").write_text("raise SystemExit('a stray engine package')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAPPER_DEBTOR_KEY", "a-secret-key")
    monkeypatch.setenv("CCVSHOP_SECRET_KEY", "another-secret")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    checker = XsdChecker(Converter(mapping).validator)
    try:
        environ = (Path("/proc") / str(checker._proc.pid) / "environ").read_bytes()
        checker.submit([b"<Order/>"])
        refusal, = checker.result()
        assert checker.in_helper  # it started and answered: nothing of tmp_path was imported
        assert isinstance(refusal, OrderError)
    finally:
        checker.close()
    assert b"a-secret-key" not in environ and b"another-secret" not in environ
    assert b"MAPPER_" not in environ and b"CCVSHOP_" not in environ


def test_a_refusal_never_quotes_the_refused_value(tmp_path):
    # the value may be a name or an e-mail address: the reason (kept in the state and the
    # run report) says which element and why, never what was in it
    xsd = tmp_path / "v.xsd"
    xsd.write_text("""<?xml version="1.0"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">
  <xs:element name="Order"><xs:complexType><xs:sequence>
    <xs:element name="Amount" type="xs:decimal"/>
    <xs:element name="Day" type="xs:date"/>
    <xs:element name="Kind"><xs:simpleType><xs:restriction base="xs:string">
      <xs:enumeration value="a"/></xs:restriction></xs:simpleType></xs:element>
  </xs:sequence></xs:complexType></xs:element>
</xs:schema>
""")
    validator = Validator(xsd)
    for text, element in ((b"<Order><Amount>jan@example.nl</Amount><Day>2026-01-01</Day><Kind>a</Kind></Order>",
                           "Order/Amount"),
                          (b"<Order><Amount>1</Amount><Day>Jan Jansen</Day><Kind>a</Kind></Order>", "Order/Day"),
                          (b"<Order><Amount>1</Amount><Day>2026-01-01</Day><Kind>Jan Jansen</Kind></Order>",
                           "Order/Kind")):
        with pytest.raises(OrderError) as caught:
            validator.check_text(text)
        reason = caught.value.reason
        assert reason.startswith(f"the XSD refuses it: {element}: "), reason
        assert "jan@example.nl" not in reason and "Jan Jansen" not in reason, reason
        assert "The value" in reason
