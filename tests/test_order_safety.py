"""One bad order never stops a run (issue: nothing lost, nothing let in, 5): whatever is raised
while converting one order quarantines that order, in words; a record without an id and an id
listed twice are reported, not crashed on. Real `mapper run` / `dry-run` on fixture files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from helpers import FIXTURES, MAPPING
from engine.errors import in_words
from engine.config.mapping import load_mapping
from engine.convert.pipeline import Converter, Quarantined
from helpers import load_order, write_order

HUGE = Decimal(10) ** 26
FIRST = "01_ideal_21_registered.json"


def cli(*args, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=120, env=env, cwd=cwd)


@pytest.fixture
def shop(tmp_path) -> Path:
    d = tmp_path / "shop"
    shutil.copytree(FIXTURES, d)
    return d


def _variant(shop: Path, name: str, new_id: int, change) -> None:
    order = load_order(FIXTURES / FIRST)
    order["id"] = new_id
    order["ordernumber"] = new_id
    order["ordernumber_full"] = str(new_id)
    change(order)
    write_order(shop, name, order)


def _rows(order, **values):
    for row in order["orderrows"]:
        row.update(values)


@pytest.mark.parametrize("where, change", [
    ("total_price", lambda o: o.update(total_price=HUGE)),
    ("a row's price", lambda o: _rows(o, price=HUGE, total_price=HUGE)),
    ("shipping costs", lambda o: o.update(total_shipping=HUGE)),
    ("payment costs", lambda o: o.update(paymethod_costs=HUGE, total_price=HUGE)),
])
def test_an_amount_of_ten_to_the_26_quarantines_its_order_and_the_run_goes_on(tmp_path, shop, where, change):
    _variant(shop, "zz_huge.json", 990001, change)
    env_state = tmp_path / "state.sqlite"
    ran = cli("run", MAPPING, "--fixtures", shop, "--state", env_state, "--outbox", tmp_path / "out",
              "--since", "2020-01-01")
    assert ran.returncode == 3, ran.stdout + ran.stderr          # quarantined, not failed
    assert "Traceback" not in ran.stderr
    line = next(l for l in ran.stdout.splitlines() if "(id 990001)" in l)
    assert "InvalidOperation" not in line and "decimal" not in line and "<class" not in line
    assert any(w in line for w in ("too large", "cannot be computed", "not a number",
                                   "beyond the declared limit")), line
    assert list((tmp_path / "out").glob("*.xml"))                 # the others went out


def test_anything_raised_while_converting_one_order_quarantines_it_in_words():
    class BrokenRegister:
        def match(self, *args, **kwargs):
            raise RuntimeError("the debtor register is not reachable")

        def flush(self, *args, **kwargs):
            pass

    m = load_mapping(MAPPING)
    outcome = Converter(m, matcher=BrokenRegister()).convert(load_order(FIXTURES / FIRST))
    assert isinstance(outcome, Quarantined)
    assert outcome.reason == "cannot be converted: the debtor register is not reachable"


@pytest.mark.parametrize("exc, words", [
    (__import__("decimal").InvalidOperation([None]), "a number that cannot be computed with"),
    (ZeroDivisionError("division by zero"), "a division by zero"),
    (OverflowError("int too large"), "a number too large to compute with"),
    (RecursionError("maximum recursion depth exceeded"), "too deeply nested (recursion)"),
    (KeyError("vat"), "no key 'vat'"),
    (MemoryError(), "too large to hold in memory"),
    (ValueError("  spaced \n out  "), "spaced out"),
    (RuntimeError(), "an unexpected error"),
])
def test_exceptions_in_words(exc, words):
    text = in_words(exc)
    assert text.startswith(words) and type(exc).__name__ not in text


def test_a_record_without_id_is_quarantined_under_its_file_name(tmp_path, shop):
    order = load_order(FIXTURES / FIRST)
    del order["id"]
    write_order(shop, "zz_no_id.json", order)
    dry = cli("dry-run", MAPPING, "--fixtures", shop)
    assert dry.returncode == 0, dry.stderr
    assert "zz_no_id.json: the record has no id ('record.id' is undefined)" in dry.stdout
    ran = cli("run", MAPPING, "--fixtures", shop, "--state", tmp_path / "s.sqlite", "--outbox", tmp_path / "out",
              "--since", "2020-01-01")
    assert ran.returncode == 3 and "Traceback" not in ran.stderr
    status = json.loads(cli("status", MAPPING, "--state", tmp_path / "s.sqlite", "--json").stdout)
    assert "zz_no_id.json" in [q["order_id"] for q in status["quarantine"]]


def test_an_id_listed_twice_is_taken_once_and_reported(tmp_path, shop):
    shutil.copy(shop / FIRST, shop / "zz_copy_of_01.json")
    dry = cli("dry-run", MAPPING, "--fixtures", shop)
    assert dry.returncode == 0, dry.stderr
    the_id = str(load_order(FIXTURES / FIRST)["id"])
    assert f"1 listed twice, taken once (id {the_id})" in dry.stdout
    ran = cli("run", MAPPING, "--fixtures", shop, "--state", tmp_path / "s.sqlite", "--outbox", tmp_path / "out",
              "--since", "2020-01-01")
    assert ran.returncode in (0, 3), ran.stderr
    assert f"1 order id(s) came twice in the intake and were taken once: {the_id}" in ran.stdout
    number = load_order(FIXTURES / FIRST)["ordernumber_full"]
    text = "".join(p.read_text("utf-8") for p in (tmp_path / "out").glob("*.xml"))
    assert text.count(f"<OrderNumber>{number}</OrderNumber>") == 1
