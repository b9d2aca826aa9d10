"""The XSD check of each record, in-process and in the helper process (engine/xsd_process.py).

``Converter.convert_all`` checks the first records itself and the rest in a helper process
on the other core. Whichever does it, the outcomes must be exactly ``convert``'s: the same
records converted, the same ones quarantined with the same reason, in the same order; and
a helper that stops is an error that says so, with nothing of its batches passed on.
"""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import FIXTURES, MAPPING
from engine import pipeline
from engine.errors import MapperError, OrderError
from engine.mapping import load_mapping
from engine.pipeline import Converted, Converter, Quarantined
from engine.sources.fixtures import FixtureSource
from engine.xsd_process import CheckProcess


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
    started = []

    class Spy(CheckProcess):
        def __init__(self, xsd_path):
            super().__init__(xsd_path)
            started.append(self)

    monkeypatch.setattr(pipeline, "CheckProcess", Spy)
    return started


def test_the_helper_gives_exactly_converts_outcomes(shop, monkeypatch):
    mapping = load_mapping(MAPPING)
    records = list(FixtureSource(shop).records())
    converter = Converter(mapping)
    one_by_one = [_key(converter.convert(r)) for r in records]
    refused = [k for k in one_by_one if k[0] == "quarantined" and k[3].startswith("the XSD refuses it")]
    assert {k[2] for k in refused} == {"XSD-90", "XSD-91"}
    assert "Currency" in refused[0][3] + refused[1][3] and "Email" in refused[0][3] + refused[1][3]

    monkeypatch.setattr(pipeline, "CHECK_HERE", 3)
    monkeypatch.setattr(pipeline, "CHECK_BATCH", 4)
    started = _started(monkeypatch)
    streamed = [_key(o) for o in Converter(mapping).convert_all(iter(records))]
    assert len(started) == 1  # the helper did check most of them
    assert started[0]._proc.returncode == 0  # and ended with the pipe
    assert streamed == one_by_one


def test_a_small_run_is_checked_in_process(monkeypatch):
    mapping = load_mapping(MAPPING)
    started = _started(monkeypatch)
    records = list(FixtureSource(FIXTURES).records())
    assert len(records) < pipeline.CHECK_HERE
    outcomes = list(Converter(mapping).convert_all(records))
    assert len(outcomes) == len(records) and started == []


def test_a_helper_that_stops_is_an_error_and_its_batches_go_nowhere(shop, monkeypatch, tmp_path):
    mapping = load_mapping(MAPPING)

    class Broken(CheckProcess):
        def __init__(self, xsd_path):
            super().__init__(tmp_path / "no-such.xsd")  # the child fails to load it and exits

    monkeypatch.setattr(pipeline, "CHECK_HERE", 5)
    monkeypatch.setattr(pipeline, "CHECK_BATCH", 4)
    monkeypatch.setattr(pipeline, "CheckProcess", Broken)
    passed = []
    with pytest.raises(MapperError) as caught:
        for outcome in Converter(mapping).convert_all(FixtureSource(shop).records()):
            passed.append(outcome)
    message = str(caught.value)
    assert "the XSD check's helper process stopped (exit code 1)" in message
    assert "no-such.xsd" in message and "run again" in message
    assert len(passed) == 5  # those checked in-process; none of the helper's batches


def test_the_helper_answers_per_text_in_order():
    mapping = load_mapping(MAPPING)
    converter = Converter(mapping)
    good = [o.xml for o in map(converter.convert, FixtureSource(FIXTURES).records()) if isinstance(o, Converted)][:2]
    bad = good[0].replace(b"<Currency>EUR</Currency>", b"<Currency>Euro</Currency>")
    assert bad != good[0]
    helper = CheckProcess(mapping.xsd_path)
    try:
        for _ in range(3):  # several batches through one process
            helper.submit([good[0], bad, good[1]])
            first, refusal, last = helper.result()
            assert first is None and last is None
            assert isinstance(refusal, OrderError) and refusal.field == "output.record"
            assert refusal.reason.startswith("the XSD refuses it: Order/Currency:")
        helper.submit([])
        assert helper.result() == []
    finally:
        helper.close()
    assert helper._proc.returncode == 0
