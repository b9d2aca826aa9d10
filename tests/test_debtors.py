"""Debtor matching that remembers across runs: the register of keyed e-mail hashes."""


import pytest
from lxml import etree
from typer.testing import CliRunner

from engine import cli
from helpers import FIXTURES, MAPPING
from engine.convert.debtors import Numbering, RegisterMatcher, import_debtors, key_hash
from engine.ops.state import open_state
from helpers import load_order, write_order

runner = CliRunner()
SECRET = "test-register-key-0123456789"


@pytest.fixture
def store(tmp_path):
    with open_state(str(tmp_path / "s.sqlite")) as s:
        yield s


def test_case_and_whitespace_find_the_same_debtor(store):
    m = RegisterMatcher(store, "m", SECRET)
    assert m.match("jan@example.nl", "100", "Jan").number == "100"
    m.flush()  # the runner does it before the batch that carries the debtor is recorded
    again = RegisterMatcher(store, "m", SECRET)  # a later run
    hit = again.match("jan@example.nl", "999", "Jan")
    assert (hit.number, hit.known) == ("100", True)
    assert key_hash(SECRET, "  JAN@Example.NL ") == key_hash(SECRET, "jan@example.nl")


def test_two_orders_of_one_new_customer_in_a_batch_get_one_debtor(store):
    m = RegisterMatcher(store, "m", SECRET, Numbering("sequence", 5000, 6))
    first = m.match("new@example.nl", "x", "Nieuw")
    second = m.match("new@example.nl", "y", "Nieuw")
    assert first.number == second.number == "005000"
    assert m.match("other@example.nl", "z", "Ander").number == "005001"


def test_sequence_never_reuses_a_number_and_skips_imported_ones(store, tmp_path):
    csv_file = tmp_path / "debiteuren.csv"
    csv_file.write_text("Debiteurnummer;Naam;E-mail\n5001;Oud Klant;oud@example.nl\n", encoding="utf-8")
    import_debtors(csv_file, store, "m", SECRET)
    m = RegisterMatcher(store, "m", SECRET, Numbering("sequence", 5000, 0))
    numbers = [m.match(f"c{i}@example.nl", "-", "C").number for i in range(3)]
    assert numbers == ["5000", "5002", "5003"]


def test_new_debtors_are_written_together_by_flush_and_the_sequence_moves_past_them(store):
    m = RegisterMatcher(store, "m", SECRET, Numbering("sequence", 5000, 0))
    numbers = [m.match(f"c{i}@example.nl", "-", "C").number for i in range(4)]
    assert numbers == ["5000", "5001", "5002", "5003"]
    assert store.debtor_lookup("m", key_hash(SECRET, "c3@example.nl")) is None  # not yet written
    m.flush()
    assert [store.debtor_lookup("m", key_hash(SECRET, f"c{i}@example.nl")) for i in range(4)] == numbers
    later = RegisterMatcher(store, "m", SECRET, Numbering("sequence", 5000, 0))  # the next run
    assert later.match("new@example.nl", "-", "N").number == "5004"
    m.flush()  # nothing new: harmless
    assert store.debtor_next_number("m", 5000) == 5005


def test_flush_refuses_when_the_register_changed_meanwhile(store):
    m = RegisterMatcher(store, "m", SECRET)
    m.match("jan@example.nl", "100", "Jan")
    store.debtor_remember("m", key_hash(SECRET, "jan@example.nl"), "42")  # e.g. `mapper debtors import`
    with pytest.raises(Exception, match="register changed .* run again"):
        m.flush()
    assert store.debtor_lookup("m", key_hash(SECRET, "jan@example.nl")) == "42"  # never overwritten


def test_at_the_end_of_a_run_a_changed_register_simply_stands(store):
    # the debtors left at the end belong to records that did not go out: nothing to stop
    m = RegisterMatcher(store, "m", SECRET)
    m.match("jan@example.nl", "100", "Jan")
    m.match("piet@example.nl", "101", "Piet")
    store.debtor_remember("m", key_hash(SECRET, "jan@example.nl"), "42")
    m.flush(before_delivery=False)
    assert store.debtor_lookup("m", key_hash(SECRET, "jan@example.nl")) == "42"
    assert store.debtor_lookup("m", key_hash(SECRET, "piet@example.nl")) == "101"


def test_same_email_other_name_keeps_the_debtor_and_flags(store):
    m = RegisterMatcher(store, "m", SECRET)
    m.match("shared@example.nl", "7", "Jan de Vries")
    same = m.match("shared@example.nl", "8", "JAN de  Vries")
    other = m.match("shared@example.nl", "9", "Marieke de Vries")
    assert same.number == other.number == "7"
    assert not same.flags and other.flags and "another name" in other.flags[0]


def test_readonly_register_remembers_nothing(store):
    RegisterMatcher(store, "m", SECRET, readonly=True).match("a@example.nl", "1", "A")
    assert store.debtor_lookup("m", key_hash(SECRET, "a@example.nl")) is None


def test_register_holds_no_raw_addresses(tmp_path):
    path = tmp_path / "s.sqlite"
    with open_state(str(path)) as s:
        RegisterMatcher(s, "m", SECRET).match("private.person@example.nl", "1", "Private Person")
    data = b"".join(p.read_bytes() for p in tmp_path.glob("s.sqlite*"))
    assert b"private.person" not in data and b"Private Person" not in data


def test_import_reports_skipped_rows(store, tmp_path):
    csv_file = tmp_path / "export.csv"
    csv_file.write_text(
        "Debiteurnummer,Naam,E-mail\n"
        "1001,Jan,jan@example.nl\n"
        "1002,Zonder Mail,\n"
        ",Geen Nummer,x@example.nl\n"
        "1003,Fout,geen-adres\n"
        "1004,Dubbel,JAN@example.nl\n"
        "1005,Piet,piet@example.nl\n", encoding="utf-8")
    report = import_debtors(csv_file, store, "m", SECRET)
    assert report.added == 2
    reasons = dict(report.skipped)
    assert reasons[3] == "debtor 1002 has no e-mail address"
    assert reasons[4] == "no debtor number"
    assert "is not an e-mail address" in reasons[5]
    assert "shares its e-mail with debtor 1001" in reasons[6]


def test_known_customer_keeps_the_imported_debtor_number_in_the_file(tmp_path):
    state = tmp_path / "state.sqlite"
    csv_file = tmp_path / "export.csv"
    csv_file.write_text("Debiteurnummer;Naam;E-mail\n2269322;Sophie Fischer;Sophie.Fischer@example.nl\n", encoding="utf-8")
    result = runner.invoke(cli.app, ["debtors", "import", str(MAPPING), str(csv_file), "--state", str(state)])
    assert result.exit_code == 0, result.output
    assert "1 added" in result.output
    out = tmp_path / "outbox"
    result = runner.invoke(cli.app, ["run", str(MAPPING), "--fixtures", str(FIXTURES), "--since", "2022-01-01",
                                     "--state", str(state), "--outbox", str(out)])
    assert result.exit_code == 3, result.output
    doc = etree.parse(str(next(out.glob("*.xml"))))
    numbers = {o.findtext("OrderNumber"): o.findtext("Debtor/DebtorNumber") for o in doc.iter("Order")}
    assert numbers["1001"] == numbers["1016"] == "2269322"
    # a later run remembers new customers too: the guest of order 1017 keeps its number
    shop = tmp_path / "shop"
    shop.mkdir()
    order = load_order(FIXTURES / "17_guest_new_customer.json")
    order["id"], order["ordernumber"], order["ordernumber_full"] = 500000099, 1099, "1099"
    write_order(shop, "99.json", order)
    result = runner.invoke(cli.app, ["run", str(MAPPING), "--fixtures", str(shop), "--since", "2022-01-01",
                                     "--state", str(state), "--outbox", str(out)])
    assert result.exit_code == 0, result.output
    newest = max(out.glob("*.xml"), key=lambda p: p.stat().st_mtime_ns)
    assert etree.parse(str(newest)).findtext(".//DebtorNumber") == numbers["1017"] == "500000017"


def test_run_without_the_register_key_is_a_configuration_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MAPPER_DEBTOR_KEY")
    result = runner.invoke(cli.app, ["run", str(MAPPING), "--fixtures", str(FIXTURES), "--state", str(tmp_path / "s"),
                                     "--outbox", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "MAPPER_DEBTOR_KEY" in result.output
    assert not (tmp_path / "o").exists()


def test_import_counts_a_repeated_row_once(store, tmp_path):
    csv_file = tmp_path / "dubbel.csv"
    csv_file.write_text("Debiteurnummer,Naam,E-mail\n100,Jan,a@example.nl\n100,Jan,A@Example.nl\n101,Piet,b@example.nl\n",
                        encoding="utf-8")
    report = import_debtors(csv_file, store, "m", SECRET)
    assert (report.added, report.already, report.skipped) == (2, 1, [])
    assert store.debtor_lookup("m", key_hash(SECRET, "a@example.nl")) == "100"
