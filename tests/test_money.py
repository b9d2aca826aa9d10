"""Decimal money rules from shared/spec/bookkeeping.md, with its worked numbers."""

from decimal import Decimal as D

import pytest

from engine.convert import money


@pytest.mark.parametrize("value, expected", [
    ("20.124", "20.12"), ("20.125", "20.13"), ("-0.125", "-0.13"), ("2.675", "2.68"), ("0.125", "0.13"),
])
def test_half_up_symmetric(value, expected):  # 2.1, 2.2
    assert money.round_cents(D(value)) == D(expected)


@pytest.mark.parametrize("incl, rate, excl, vat", [
    ("14.95", 21, "12.36", "2.59"), ("17.50", 9, "16.06", "1.44"), ("25.00", 6, "23.58", "1.42"),
])
def test_vat_derived_from_the_charged_side(incl, rate, excl, vat):  # 2.4
    v = money.vat_from_incl(D(incl), D(rate))
    assert (D(incl) - v, v) == (D(excl), D(vat))


def test_per_line_versus_per_total_rounding_example():  # 2.3
    per_line = money.vat_from_excl(D("37.50"), D(21)) + money.vat_from_excl(D("12.50"), D(21))
    per_total = money.vat_from_excl(D("50.00"), D(21))
    assert (per_line, per_total) == (D("10.51"), D("10.50"))


def test_shipping_split_pro_rata_example():  # 3.2
    assert money.allocate(D("6.95"), [D("30.00"), D("20.00")], [D(9), D(21)]) == [D("4.17"), D("2.78")]


def test_allocation_always_adds_up_and_ties_go_to_the_higher_rate():
    assert money.allocate(D("0.01"), [D(1), D(1)], [D(9), D(21)]) == [D("0.00"), D("0.01")]
    assert money.allocate(D("-0.01"), [D(1), D(1)], [D(9), D(21)]) == [D("0.00"), D("-0.01")]
    parts = money.allocate(D("10.00"), [D("3"), D("3"), D("3")], [D(0), D(9), D(21)])
    assert sum(parts) == D("10.00") and parts == [D("3.33"), D("3.33"), D("3.34")]


def test_floats_are_refused():
    with pytest.raises(TypeError, match="float"):
        money.to_decimal(2.675)
    with pytest.raises(ValueError):
        money.to_decimal(True)


@pytest.mark.parametrize("value, text", [
    ("1043.45", "€ 1.043,45"), ("887.3", "€ 887,30"), ("0", "€ 0,00"), ("-5", "€ -5,00"), ("1234567.891", "€ 1.234.567,89"),
])
def test_dutch_money_format(value, text):
    assert money.dutch(D(value)) == text


def test_number_forms_for_the_xml():
    assert money.plain(D("590")) == "590.00"
    assert money.trim(D("24.67") / D(3)) == "8.2233"
    assert money.trim(D("12.5")) == "12.50"
    assert money.quantity(D("2.50")) == "2.5" and money.quantity(D("1")) == "1" and money.quantity(D("-1")) == "-1"


def _fixed_cases():
    import random
    rng = random.Random(20261127)
    edge = ["0", "-0", "0.00", "-0.00", "1E+2", "1.00E+3", "-7E+1", "1E-6", "1E-7", "0.0000001", "0.000001",
            "123E-9", "12345678901234567890.123", "1e-2", "5E0", "-0E-3", "0E+2", "Infinity", "-Infinity", "NaN"]
    rand = [f"{rng.choice('-+ ')}{rng.randint(0, 10**rng.randint(0, 12))}E{rng.randint(-12, 6)}".strip()
            for _ in range(400)]
    return edge + rand


@pytest.mark.parametrize("text", _fixed_cases())
def test_fixed_is_format_f(text):
    value = D(text)
    assert money.fixed(value) == format(value, "f")


@pytest.mark.parametrize("text", ["1E+2", "100", "2.50", "-0.5", "0.0000001", "1E-7", "3.000", "-0", "12E+3"])
def test_forms_equal_their_format_f_definitions(text):
    value = D(text)
    whole = value.to_integral_value()
    assert money.quantity(value) == (f"{value.normalize():f}" if value != whole else f"{whole:f}")
    for places in range(0, 9):
        assert money.plain(value, places) == f"{money.round_to(value, places):f}"
