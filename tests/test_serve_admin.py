"""The operator's pages over HTTP (the browser test covers the clicks): the login throttle, the
session, forged forms, each action, the morning summary in JSON, and no secret on any page."""
from __future__ import annotations

import re
import secrets
from urllib.parse import urlsplit

import psycopg
import pytest
import requests

from helpers import FIXTURES, pg_admin_url
from serving import ADMIN_PASSWORD, start_serve, stop_serve
from engine.simulators.ccvshop import CCVShopSimulator
from engine.simulators.ccvshop_data import load_fixture_dir

pytestmark = pytest.mark.slow  # real processes end to end: -m 'not slow' skips them


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    name = f"mapper_admin_{secrets.token_hex(4)}"
    with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(pg_admin_url())
    s = start_serve(tmp_path_factory.mktemp("serve"), f"{parts.scheme}://{parts.netloc}/{name}")
    s.database = f"{parts.scheme}://{parts.netloc}/{name}"
    sim = CCVShopSimulator(load_fixture_dir(FIXTURES), keys={"adm-pub": "adm-secret-value"})
    sim.start()
    out = s.mapper("shops", "add", "Admin Winkel", "--api-root", sim.url, "--licence-code", "LIC-SECRET-42",
                   extra={"CCVSHOP_PUBLIC_KEY": "adm-pub", "CCVSHOP_SECRET_KEY": "adm-secret-value"}).stdout
    s.shop_id = out.strip().splitlines()[-1]
    s.mapper("shops", "run", s.shop_id, "--since", "2000-01-01")
    s.mapper("worker", "--until-idle")
    s.secrets += ["adm-secret-value", "LIC-SECRET-42"]
    yield s
    sim.stop()
    stop_serve(s)
    with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def clear_failures(served):
    with psycopg.connect(served.database, autocommit=True) as conn:
        conn.execute("DELETE FROM admin_login_failures")


def login(served, client_ip="127.0.0.1") -> dict[str, str]:
    """The session cookie (requests does not send a Secure cookie over http: passed by hand)."""
    answer = requests.post(served.url + "/admin/login", data={"password": ADMIN_PASSWORD}, allow_redirects=False,
                           timeout=10)
    assert answer.status_code == 303, answer.text
    set_cookie = answer.headers["set-cookie"]
    assert "httponly" in set_cookie.lower() and "secure" in set_cookie.lower() and "samesite=strict" in set_cookie.lower()
    value = re.search(r"mapper_admin=([^;]+)", set_cookie).group(1)
    return {"Cookie": f"mapper_admin={value}"}


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def test_pages_need_the_login(served):
    for path in ("/admin", "/admin/summary", "/admin/summary.json", f"/admin/shops/{served.shop_id}"):
        answer = requests.get(served.url + path, allow_redirects=False, timeout=10)
        assert answer.status_code == 303 and answer.headers["location"] == "/admin/login", path
    forged = requests.post(served.url + f"/admin/shops/{served.shop_id}/disable", data={"reason": "x"},
                           allow_redirects=False, timeout=10)
    assert forged.status_code == 303 and forged.headers["location"] == "/admin/login"
    tampered = requests.get(served.url + "/admin", headers={"Cookie": "mapper_admin=eyJhZG1pbiI6IHRydWV9.x.y"},
                            allow_redirects=False, timeout=10)
    assert tampered.status_code == 303


def test_a_hundred_wrong_passwords_are_throttled(served):
    clear_failures(served)
    statuses = [requests.post(served.url + "/admin/login", data={"password": f"guess-{i}"}, timeout=10).status_code
                for i in range(100)]
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}
    # the right password waits too (a guess that happens to be right must not get through)
    right = requests.post(served.url + "/admin/login", data={"password": ADMIN_PASSWORD}, allow_redirects=False,
                          timeout=10)
    assert right.status_code == 429 and "set-cookie" not in right.headers
    assert "Too many failed attempts" in right.text and ADMIN_PASSWORD not in right.text
    log = served.log()
    assert log.count("wrong password") == 5 and "admin login from 127.0.0.1 refused: 5 failed attempts" in log
    assert "guess-1" not in log
    clear_failures(served)
    assert requests.post(served.url + "/admin/login", data={"password": ADMIN_PASSWORD}, allow_redirects=False,
                         timeout=10).status_code == 303


def test_actions_need_the_session_token_and_do_what_they_say(served):
    clear_failures(served)
    cookie = login(served)
    page = requests.get(served.url + f"/admin/shops/{served.shop_id}", headers=cookie, timeout=10)
    assert page.status_code == 200 and "Admin Winkel" in page.text
    token = csrf_of(page.text)
    act = f"{served.url}/admin/shops/{served.shop_id}"

    no_token = requests.post(act + "/disable", data={"reason": "x"}, headers=cookie, allow_redirects=False, timeout=10)
    wrong = requests.post(act + "/disable", data={"reason": "x", "csrf": "forged"}, headers=cookie,
                          allow_redirects=False, timeout=10)
    assert (no_token.status_code, wrong.status_code) == (403, 403)
    assert served.mapper("shops", "list", "--json").stdout.count('"active"') == 1

    def post(action, **data):
        answer = requests.post(f"{act}/{action}", data=dict(data, csrf=token), headers=cookie, allow_redirects=False,
                               timeout=30)
        assert answer.status_code == 303, answer.text
        notice = requests.get(served.url + answer.headers["location"], headers=cookie, timeout=10).text
        return re.search(r'<p class="notice" id="notice">([^<]*)</p>', notice).group(1)

    quarantined = re.findall(r'<tr data-order="([^"]+)">', page.text)
    assert len(quarantined) == 2
    assert post("drop", order=quarantined[0], reason="") == "not dropped: give a reason (for the audit trail)"
    assert post("drop", order=quarantined[0], reason="booked by hand") == f"order {quarantined[0]} dropped: booked by hand"
    assert post("drop", order="999", reason="x") == "order 999 is not in quarantine"
    assert post("retry", order=quarantined[0]) == f"order {quarantined[0]} is tried again: a run is enqueued"
    assert post("retry", order=quarantined[1]) == f"order {quarantined[1]} is tried again: a run already waits"
    assert post("disable", reason="owner asked, ticket 42") == "disabled: owner asked, ticket 42"
    assert post("run") == "not run: the shop is not active"
    assert '"disabled"' in served.mapper("shops", "list", "--json").stdout
    assert post("enable") == "enabled"
    summary = requests.get(served.url + "/admin/summary.json", headers=cookie, timeout=10).json()
    [entry] = [s for s in summary["needs_attention"] if s["id"] == served.shop_id]
    assert entry["open_quarantine"] == 2 and "2 order(s) in quarantine" in entry["why"]
    assert requests.post(f"{act}/explode", data={"csrf": token}, headers=cookie, timeout=10).status_code == 404


def test_no_secret_on_any_page(served):
    clear_failures(served)
    cookie = login(served)
    pages = [requests.get(served.url + p, headers=cookie, timeout=10).text
             for p in ("/admin", "/admin?filter=attention&sort=name&dir=desc", f"/admin/shops/{served.shop_id}",
                       "/admin/summary", "/admin/summary.json", "/metrics")]
    for secret in served.secrets:
        assert all(secret not in p for p in pages)
        assert secret not in served.log()
    headers = requests.get(served.url + "/admin", headers=cookie, timeout=10).headers
    assert headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in headers["content-security-policy"]
