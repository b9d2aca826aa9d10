"""A customer's data never leaves in a message (issue: nothing lost, nothing let in, 9): flags
and quarantine reasons name orders by number, the mapping's privacy.redact values are taken
out, and a URL with a password in it is never printed. A real `mapper run` on fixture files:
stdout, stderr, the JSON run report and the state file are searched."""

from __future__ import annotations

import shutil
import subprocess
import sys

from helpers import FIXTURES, MAPPING, ROOT
from helpers import load_order, write_order

VAT = "DE811907980"
EMAIL = "klaus.privat@example.de"
NAME = "Klaus Geheimnisvoll"


def cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=120, env=env)


def test_no_customer_data_in_stdout_log_report_or_state(tmp_path, monkeypatch):
    shop = tmp_path / "shop"
    shutil.copytree(FIXTURES, shop)
    order = load_order(FIXTURES / "01_ideal_21_registered.json")
    order.update(id=880001, ordernumber=880001, ordernumber_full="880001")
    order["user"] = dict(order["user"], id="30088001")     # a customer of their own (own debtor number)
    order["customer"]["btw"] = VAT                          # flagged: a foreign VAT number, NL VAT charged
    order["customer"]["email"] = EMAIL
    order["customer"]["billingaddress"].update(country_code="DE", full_name=NAME)
    write_order(shop, "zz_flagged.json", order)
    broken = dict(order, id=880002, ordernumber=880002, ordernumber_full="880002", total_price=1)
    write_order(shop, "zz_quarantined.json", broken)          # totals differ: quarantined

    # a mapping whose check message would print the customer's data
    text = MAPPING.read_text("utf-8").replace(
        "checks:\n", "checks:\n  - name: nosy\n    when: record.id == 880002\n    expect: false\n"
        "    message: \"customer {{ billing.full_name }} ({{ record.customer.email }}, {{ record.customer.btw }})\"\n", 1)
    text = text.replace("xsd: ../schemas/", f"xsd: {ROOT / 'schemas'}/")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(text, "utf-8")

    reports = tmp_path / "reports"
    monkeypatch.setenv("MAPPER_REPORTS", str(reports))
    state = tmp_path / "state.sqlite"
    ran = cli("run", mapping, "--fixtures", shop, "--state", state, "--outbox", tmp_path / "out",
              "--since", "2020-01-01")
    assert ran.returncode == 3, ran.stdout + ran.stderr
    assert "order 880001: a VAT number of a customer in DE" in ran.stdout, ran.stdout[-3000:]
    assert "order 880002 (id 880002): customer <redacted> (<redacted>, <redacted>)" in ran.stdout
    dry = cli("dry-run", mapping, "--fixtures", shop)
    listed = cli("quarantine", "list", mapping, "--state", state)
    # the dry-run's import screen shows the debtor's name, as Asperion will: its messages may not
    messages = "\n".join(l for l in dry.stdout.splitlines() if l.startswith("  order "))
    assert "order 880002 (id 880002): customer <redacted>" in messages
    seen = {"stdout": ran.stdout, "stderr": ran.stderr, "dry-run messages": messages + dry.stderr,
            "quarantine list": listed.stdout,
            "report": "".join(p.read_text("utf-8") for p in reports.glob("*.json")),
            "state": b"".join(p.read_bytes() for p in tmp_path.glob("state.sqlite*")).decode("latin-1")}
    assert seen["report"], "no run report written"
    for where, text in seen.items():
        for secret in (VAT, EMAIL, NAME, "Geheimnisvoll"):
            assert secret not in text, f"{secret} in {where}"


def test_a_shop_url_with_a_password_is_refused_without_showing_it(tmp_path):
    import os
    for url in ("https://user:pa55word-Z@shop.example.nl", "https://user:pa55word-Z@shop.example.nl:99999",
                "https://user:pa55word-Z@shop.example.nl:abc"):
        env = dict(os.environ, CCVSHOP_URL=url, CCVSHOP_PUBLIC_KEY="p", CCVSHOP_SECRET_KEY="s")
        ran = cli("dry-run", MAPPING, env=env)
        assert ran.returncode != 0
        assert "pa55word" not in ran.stdout + ran.stderr and "Traceback" not in ran.stderr
        assert "error:" in ran.stderr
