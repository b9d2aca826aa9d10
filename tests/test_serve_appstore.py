"""`mapper serve` and the CCV Shop App Store, end to end: a real uvicorn process on loopback over
PostgreSQL, the CCV simulator installing and uninstalling the app as CCV does (one simulator per
shop, each its own key pair), `mapper worker` running the installed shops.

The protocol's test vectors (spec/hosted.md §2) are checked literally; then the life cycle, and
every kind of bad input: refused with the right status, logged for the operator, nothing stored,
no secret in any page, log line or error."""
from __future__ import annotations

import json
import re
import secrets
import threading
import time
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
import requests

from helpers import FIXTURES, pg_admin_url
from helpers import load_order
from serving import APPS, MASTER, start_serve, stop_serve
from engine.simulators.ccvshop import CCVShopSimulator
from engine.simulators.ccvshop_appstore import StoreApp, app_hash
from engine.simulators.ccvshop_data import load_fixture_dir

from engine.hosted.appstore import BadHandshake, parse_handshake, sign, verify

pytestmark = pytest.mark.slow  # real processes end to end: -m 'not slow' skips them


# ----------------------------------------------------------------------------- the protocol

def test_the_four_test_vectors_of_the_spec():
    body = ('{"api_public":"pubTEST","api_secret":"secTEST","api_root":"https://shop.example.test",'
            '"return_url":"https://shop.example.test/admin/appstore/return"}')
    assert sign("appsecret_TEST", "https://app.example.test/ccv/handshake", body) == (
        "d5803ad49b45fb2e3f3171395ac40d3c4d5d50a0a727117eeeb0651a8e0d1fe2869fd23f830c2be05596824c3e32e4d"
        "7528628e6ef3d83eccec2f3cbaac066d0")
    assert sign("appsecret_TEST", "https://app.example.test/ccv/install", "pubTEST") == (
        "66fc53cd49168dbe9ea17bb9768201d7f0e3cddb6b37f2f4d4aec6047302f0a9eeb6c3e420d4e5685ebd27caa694927977"
        "b55326efc3c4dbf715cb8b2956b853")
    assert sign("appsecret_TEST", "https://app.example.test/ccv/uninstall", '{"api_public":"pubTEST"}') == (
        "dd0a6a2b98a47d4cad0b67738d5470364f0102cfeca8ff241671338c717041f5e6c871e543049d8fbe27f6d1e3a77d4591"
        "66f5d5d0ccbfb7d99b379b0074762d")
    # an API call with the install's key pair, as the engine's HMAC client signs CCV API calls
    from engine.io.http.auth import HmacAuth
    auth = HmacAuth(public="pubTEST", secret="secTEST", algorithm="sha512")
    assert auth.signature("PATCH", "/api/rest/v1/apps/123", b'{"is_installed":true}', "2024-03-04T15:48:05+00:00") == (
        "6634401ff3e28093e1c4999215a24abb7476545e68decb7d2aabd36c5a2e64cd4f8783a6de3134cc744258957fdc43c985"
        "08be7b7fabd5ebeedf22fe5b8a002f")


def test_verify_is_strict_and_tolerant_of_junk():
    good = sign("s", "u", b"b")
    assert verify(good, good) and verify(good, good.upper()) and verify(good, f" {good} ")
    assert not verify(good, None) and not verify(good, "") and not verify(good, good[:-1] + "0")
    assert not verify(good, "é" * 128)


@pytest.mark.parametrize("body, field", [
    (b"not json", "JSON"), (b"[]", "object"), (b'{"api_public":"p","api_root":"https://s","return_url":"https://r"}',
                                               "api_secret"),
    (b'{"api_public":"p","api_secret":"TOPSECRET","api_root":"ftp://s","return_url":"https://r"}', "api_root"),
    (b"{" + b" " * 20000 + b"}", "16384")])
def test_a_bad_handshake_names_the_field_never_the_secret(body, field):
    with pytest.raises(BadHandshake) as info:
        parse_handshake(body)
    assert field in str(info.value) and "TOPSECRET" not in str(info.value)


# ----------------------------------------------------------------------------- a served app

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    name = f"mapper_serve_{secrets.token_hex(4)}"
    with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(pg_admin_url())
    database = f"{parts.scheme}://{parts.netloc}/{name}"
    s = start_serve(tmp_path_factory.mktemp("serve"), database)
    s.database = database
    yield s
    stop_serve(s)
    with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def shop_sim():
    sim = CCVShopSimulator(load_fixture_dir(FIXTURES), keys={})
    sim.start()
    yield sim
    sim.stop()


def store_app(served, variant="basis") -> StoreApp:
    app_id, secret = APPS[variant]
    return StoreApp(int(app_id), secret, *served.app_urls(variant))


def db(served, sql, *args):
    with psycopg.connect(served.database, autocommit=True) as conn:
        cur = conn.execute(sql, args)
        return cur.fetchall() if cur.description else cur.rowcount


def form_token(page: str) -> str:
    return re.search(r'name="token" value="([^"]+)"', page).group(1)


def errors_of(page: str) -> dict[str, str]:
    return dict(re.findall(r'<div class="error" id="([a-z_]+)-error">([^<]+)</div>', page))


def install(served, sim, variant="basis", name="Bakkerij Jansen", email="eigenaar@bakkerij.example.nl",
            licence="BAS-2026-0001"):
    inst = sim.install_app(store_app(served, variant))
    assert inst.handshake_status == 200, served.log()
    page = requests.get(inst.install_page_url, timeout=10)
    assert page.status_code == 200
    answer = requests.post(store_app(served, variant).install_url, allow_redirects=False, timeout=30,
                           data={"token": form_token(page.text), "language": "nl", "name": name, "email": email,
                                 "licence_code": licence})
    assert answer.status_code == 303, answer.text
    return inst, answer


def shop_of(served, inst) -> dict:
    shops = json.loads(served.mapper("shops", "list", "--json").stdout)
    [shop_id] = [r[0] for r in db(served, "SELECT shop_id FROM app_installs WHERE status <> 'handshake'")
                 if r[0] and any(s["id"] == r[0] for s in shops) and _matches(served, r[0], inst)]
    return next(s for s in shops if s["id"] == shop_id)


def _matches(served, shop_id, inst) -> bool:
    import hashlib
    key = hashlib.sha256(b"mapper api_public|" + inst.api_public.encode()).hexdigest()
    return bool(db(served, "SELECT 1 FROM app_installs WHERE shop_id = %s AND api_public_hash = %s", shop_id, key))


def test_the_whole_life_of_an_installation(served, shop_sim, tmp_path):
    sim = shop_sim
    inst = sim.install_app(store_app(served))
    assert inst.handshake_status == 200
    page = requests.get(inst.install_page_url, timeout=10)
    assert page.status_code == 200 and 'lang="nl"' in page.text and "Licentiecode" in page.text
    assert f'value="{sim.url}" readonly' in page.text           # the shop's URL, not to be edited
    action = store_app(served).install_url

    # a field error: shown next to the field, the values kept
    wrong = requests.post(action, allow_redirects=False, timeout=10, data={
        "token": form_token(page.text), "language": "nl", "name": "Bakkerij Jansen", "email": "eigenaar@",
        "licence_code": "BAS-2026-0001"})
    assert wrong.status_code == 400
    assert errors_of(wrong.text) == {"email": "Dit is geen geldig e-mailadres."}
    assert 'value="Bakkerij Jansen"' in wrong.text and 'value="eigenaar@"' in wrong.text
    assert not db(served, "SELECT 1 FROM shops WHERE name = 'Bakkerij Jansen'")    # nothing made yet

    done = requests.post(action, allow_redirects=False, timeout=30, data={
        "token": form_token(wrong.text), "language": "nl", "name": "Bakkerij Jansen",
        "email": "Eigenaar@Bakkerij.example.nl", "licence_code": "BAS-2026-0001"})
    assert done.status_code == 303 and done.headers["location"] == inst.return_url
    assert requests.get(done.headers["location"], timeout=10).status_code == 200   # lands in the shop again
    assert sim.app_installed(inst.api_public)                  # PATCH /apps/{id}: 204
    shop = shop_of(served, inst)
    assert (shop["name"], shop["plan"], shop["status"]) == ("Bakkerij Jansen", "basis", "active")
    # the first run is due now, not tonight
    [(next_run,)] = db(served, "SELECT next_run_at FROM shops WHERE id = %s", shop["id"])
    assert next_run <= time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 5))

    # the shop's webhooks: the mapping's events, each at a secret address of its own (never the shop id)
    hooks = [h for h in sim._webhooks.values() if h.get("owner") == inst.api_public]
    assert sorted(h["event"] for h in hooks) == sorted(
        ["orders.updated.ispaid", "orders.created", "orders.updated.status", "returns.created", "returns.updated"])
    tokens = set()
    for h in hooks:
        token, event = re.fullmatch(rf"{re.escape(served.url)}/hooks/([^/]+)/([^/]+)", h["address"]).groups()
        assert event == h["event"] and shop["id"] not in token and len(token) >= 32
        tokens.add(token)
    assert len(tokens) == 5

    # the first run (the worker takes the due shop), then a webhook from the shop is a hint for
    # that shop: an order of yesterday, paid today, delivered by the next run
    served.mapper("worker", "--until-idle")
    outbox = served.log_path.parent / "outboxes" / shop["id"]
    first = {f.name for f in outbox.glob("*.xml")}
    assert first, f"the first run wrote no file for shop {shop['id']}"
    late = load_order(FIXTURES / "01_ideal_21_registered.json")
    late.update(id=700000001, ordernumber=7001, ordernumber_full="7001", paid=False,
                create_date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86400)))
    sim.add_order(late)
    sim.set_paid(700000001)
    sim.wait_webhooks()
    assert [e["status"] for e in sim.webhook_log if e["event"] == "orders.updated.ispaid"] == [200]
    hints = db(served, "SELECT shop_id, event FROM hints WHERE mapping = %s", f"{shop['id']}/ccvshop-asperion")
    assert hints == [("700000001", "orders.updated.ispaid")]
    db(served, "UPDATE shops SET next_run_at = '2000-01-01T00:00:00Z' WHERE id = %s", shop["id"])   # its day
    served.mapper("worker", "--until-idle")
    new = [f for f in outbox.glob("*.xml") if f.name not in first]
    assert len(new) == 1 and "Bestelling 7001" in new[0].read_text("utf-8")

    # the store's Edit: the install URL again shows the shop's settings
    edit = requests.get(inst.install_page_url, timeout=10)
    assert edit.status_code == 200 and "Instellingen van de koppeling" in edit.text
    assert 'value="Bakkerij Jansen"' in edit.text and 'value="eigenaar@bakkerij.example.nl"' in edit.text
    assert "BAS-2026-0001" not in edit.text                       # the licence code is never shown
    changed = requests.post(action, allow_redirects=False, timeout=30, data={
        "token": form_token(edit.text), "language": "nl", "name": "Bakkerij Jansen & Zn",
        "email": "eigenaar@bakkerij.example.nl", "licence_code": ""})
    assert changed.status_code == 303
    assert shop_of(served, inst)["name"] == "Bakkerij Jansen & Zn"
    assert len([h for h in sim._webhooks.values() if h.get("owner") == inst.api_public]) == 5   # not doubled

    # uninstall: stopped at once, keys gone, audit rows kept; a replay is harmless
    delivered_before = db(served, "SELECT COUNT(*) FROM batch_orders WHERE mapping = %s",
                          f"{shop['id']}/ccvshop-asperion")[0][0]
    assert db(served, "SELECT COUNT(*) FROM debtors WHERE mapping LIKE %s", f"{shop['id']}/%")[0][0] > 0
    assert sim.uninstall_app(inst.api_public) == 200
    [(status, sealed, next_run)] = db(served, "SELECT status, secrets, next_run_at FROM shops WHERE id = %s", shop["id"])
    assert (status, sealed, next_run) == ("removed", None, None)
    assert db(served, "SELECT COUNT(*) FROM webhook_tokens WHERE mapping LIKE %s", f"{shop['id']}/%")[0][0] == 0
    assert db(served, "SELECT COUNT(*) FROM debtors WHERE mapping LIKE %s", f"{shop['id']}/%")[0][0] == 0
    assert db(served, "SELECT COUNT(*) FROM batch_orders WHERE mapping = %s",
              f"{shop['id']}/ccvshop-asperion")[0][0] == delivered_before > 0
    gone = requests.post(hooks[0]["address"], json={"id": 1}, timeout=10)
    assert gone.status_code == 404
    assert sim.uninstall_app(inst.api_public) == 200                       # replayed: OK, nothing to do
    assert requests.get(inst.install_page_url, timeout=10).status_code == 404
    log = served.log()
    for secret in served.secrets + [inst.api_secret, *tokens]:
        assert secret not in log


def test_three_shops_install_at_once_each_with_its_own_keys(served):
    sims = [CCVShopSimulator([], keys={}) for _ in range(3)]
    for s in sims:
        s.start()
    try:
        results = [None] * 3

        def go(i):
            results[i] = install(served, sims[i], variant="plus" if i == 2 else "basis", name=f"Winkel {i}",
                                 email=f"w{i}@example.nl", licence=f"LIC-000{i}")
        threads = [threading.Thread(target=go, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        installs = [r[0] for r in results]
        assert len({i.api_public for i in installs}) == 3
        shops = [shop_of(served, i) for i in installs]
        assert [s["plan"] for s in shops] == ["basis", "basis", "plus"]
        assert len({s["id"] for s in shops}) == 3 and all(s["status"] == "active" for s in shops)
        assert all(s.app_installed(i.api_public) for s, i in zip(sims, installs))
    finally:
        for s in sims:
            s.stop()


def test_a_form_sent_again_after_a_failure_halfway_finishes_without_doubling(served, shop_sim):
    sim = shop_sim
    inst = sim.install_app(store_app(served))
    page = requests.get(inst.install_page_url, timeout=10)
    sim.inject("5xx", path_contains="/apps/", count=10)           # marking installed fails
    data = {"token": form_token(page.text), "language": "en", "name": "Half Way", "email": "half@example.nl",
            "licence_code": "HALF-0001"}
    failed = requests.post(store_app(served).install_url, data=data, allow_redirects=False, timeout=60)
    assert failed.status_code == 502 and "Something went wrong" in failed.text
    assert 'value="Half Way"' in failed.text
    assert not sim.app_installed(inst.api_public)
    sim.clear_faults()
    again = requests.post(store_app(served).install_url, data=dict(data, token=form_token(failed.text)),
                          allow_redirects=False, timeout=60)
    assert again.status_code == 303 and sim.app_installed(inst.api_public)
    shop = shop_of(served, inst)
    assert len([h for h in sim._webhooks.values() if h.get("owner") == inst.api_public]) == 5
    assert db(served, "SELECT COUNT(*) FROM shops WHERE name = 'Half Way'")[0][0] == 1
    assert db(served, "SELECT COUNT(*) FROM webhook_tokens WHERE mapping = %s",
              f"{shop['id']}/ccvshop-asperion")[0][0] == 5


# ----------------------------------------------------------------------------- bad input

def post_signed(url, secret, body: bytes, **headers):
    return requests.post(url, data=body, timeout=10, headers={"Content-Type": "application/json",
                                                               "x-hash": app_hash(secret, url, body), **headers})


def handshake_body(public="pub-x", secret="sec-x", root="https://shop.example.test"):
    return json.dumps({"api_public": public, "api_secret": secret, "api_root": root,
                       "return_url": root + "/admin/appstore/return"}).encode()


def test_handshakes_refused_store_nothing_and_log_why(served):
    handshake_url = store_app(served).handshake_url
    body = handshake_body(public="pub-refused", secret="THE-API-SECRET-1")
    count = db(served, "SELECT COUNT(*) FROM app_installs")[0][0]
    wrong = requests.post(handshake_url, data=body, timeout=10,
                          headers={"x-hash": app_hash("not-the-app-secret", handshake_url, body)})
    missing = requests.post(handshake_url, data=body, timeout=10)
    other_variant = post_signed(store_app(served, "plus").handshake_url, APPS["basis"][1], body)
    unknown_app = post_signed(f"{served.url}/ccv/gold/handshake", APPS["basis"][1], body)
    huge = post_signed(handshake_url, APPS["basis"][1], b'{"a":"' + b"x" * 20000 + b'"}')
    bad_json = post_signed(handshake_url, APPS["basis"][1], b'{"api_public": 5}')
    assert [r.status_code for r in (wrong, missing, other_variant, unknown_app, huge, bad_json)] == \
        [401, 401, 401, 404, 413, 400]
    assert all(r.text in ("refused", "not found") for r in (wrong, missing, other_variant, unknown_app, huge, bad_json))
    assert db(served, "SELECT COUNT(*) FROM app_installs")[0][0] == count
    ok = post_signed(handshake_url, APPS["basis"][1], body)
    replay = post_signed(handshake_url, APPS["basis"][1], body)
    assert (ok.status_code, ok.text, replay.status_code) == (200, "OK", 409)
    assert db(served, "SELECT COUNT(*) FROM app_installs")[0][0] == count + 1
    log = served.log()
    assert "handshake refused (401)" in log and "x-hash does not match" in log and "a replay?" in log
    assert "THE-API-SECRET-1" not in log
    # the key pair is sealed, never in clear in the database
    dump = json.dumps(db(served, "SELECT * FROM app_installs"), default=str)
    assert "THE-API-SECRET-1" not in dump and "pub-refused" not in dump


def test_install_pages_and_forms_refused(served, shop_sim):
    inst = shop_sim.install_app(store_app(served))
    install_url = store_app(served).install_url
    q = parse_qs(urlsplit(inst.install_page_url).query)
    forged = requests.get(install_url, params={"api_public": q["api_public"][0], "x-hash": "0" * 128}, timeout=10)
    unsigned = requests.get(install_url, params={"api_public": q["api_public"][0]}, timeout=10)
    unknown = requests.get(install_url, timeout=10, params={
        "api_public": "pub-never-seen", "x-hash": sign(APPS["basis"][1], install_url, "pub-never-seen")})
    assert [r.status_code for r in (forged, unsigned, unknown)] == [403, 403, 404]
    assert "App Store" in forged.text and q["api_public"][0] not in forged.text

    page = requests.get(inst.install_page_url, timeout=10).text
    token = form_token(page)
    good = {"token": token, "language": "nl", "name": "Winkel", "email": "a@b.nl", "licence_code": "LIC-1234"}

    def post(**changes):
        return requests.post(install_url, data=dict(good, **changes), allow_redirects=False, timeout=10)
    assert post(token=token[:-2] + "xx").status_code == 403                          # forged token
    assert post(token="").status_code == 403
    assert requests.post(store_app(served, "plus").install_url, data=good, timeout=10).status_code == 403   # other app
    # an expired token: signed with the same key, 2 hours ago
    from itsdangerous import URLSafeTimedSerializer
    from engine.hosted.crypto import SecretBox

    from unittest import mock
    signer = URLSafeTimedSerializer(SecretBox(MASTER).signing_key("install form"), salt="mapper install form")
    with mock.patch("time.time", return_value=time.time() - 7200):
        old = signer.dumps(signer.loads(token))
    expired = post(token=old)
    assert expired.status_code == 403 and "verlopen" in expired.text
    long_name = post(name="A" * 10_000)
    assert long_name.status_code == 400 and errors_of(long_name.text) == {"name": "Dit is te lang (hoogstens 100 tekens)."}
    assert "A" * 200 in long_name.text                                                # kept, to correct it
    markup = post(name="<script>alert(1)</script>", email="x@y.nl<img>")
    assert markup.status_code == 400 and set(errors_of(markup.text)) == {"name", "email"}
    assert "<script>alert(1)" not in markup.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in markup.text
    missing = post(name="", email="", licence_code="")
    assert set(errors_of(missing.text)) == {"name", "email", "licence_code"}
    assert post(licence_code="x").status_code == 400
    huge = requests.post(install_url, data={"token": token, "name": "x" * 20_000}, timeout=10)
    assert huge.status_code == 413
    # none of it made a shop
    assert not db(served, "SELECT 1 FROM shops WHERE name IN ('Winkel', %s)", "A" * 100)
    assert "install page refused" in served.log() and "forged or damaged form token" in served.log()


def test_uninstall_refused_without_the_signature(served, shop_sim):
    inst, _ = install(served, shop_sim, name="Blijft Staan", email="b@s.nl", licence="KEEP-0001")
    url = store_app(served).uninstall_url
    body = json.dumps({"api_public": inst.api_public}).encode()
    assert requests.post(url, data=body, timeout=10).status_code == 401
    assert requests.post(url, data=body, timeout=10, headers={"x-hash": app_hash("wrong", url, body)}).status_code == 401
    assert post_signed(url, APPS["basis"][1], b"{}").status_code == 400
    assert db(served, "SELECT status FROM shops WHERE name = 'Blijft Staan'") == [("active",)]


def test_webhooks_refused_without_a_known_token(served, shop_sim):
    inst, _ = install(served, shop_sim, name="Hook Winkel", email="h@w.nl", licence="HOOK-0001")
    hook = next(h for h in shop_sim._webhooks.values()
                if h.get("owner") == inst.api_public and h["event"] == "orders.updated.ispaid")
    address = hook["address"]
    shop = shop_of(served, inst)
    base, token, event = address.rsplit("/", 2)
    assert requests.post(f"{base}/{shop['id']}/{event}", json={"id": 1}, timeout=10).status_code == 404  # shop id: no
    assert requests.post(f"{base}/{token}/orders.created", json={"id": 1}, timeout=10).status_code == 404  # other event
    assert requests.post(f"{base}/{'x' * 40}/{event}", json={"id": 1}, timeout=10).status_code == 404
    assert requests.post(address, data=b"{" + b" " * 70_000 + b"}", timeout=10,
                         headers={"Content-Type": "application/json"}).status_code == 413
    assert requests.post(address, json={"id": "../.."}, timeout=10).status_code == 400
    assert requests.post(address, data=b"id=1", timeout=10).status_code == 415
    assert requests.post(address, json={"id": 500000001}, timeout=10).status_code == 200
    assert db(served, "SELECT shop_id FROM hints WHERE mapping = %s", f"{shop['id']}/ccvshop-asperion") == [("500000001",)]
    assert token not in served.log()


def test_metrics_and_health(served):
    assert requests.get(served.url + "/healthz", timeout=10).text == "ok"
    text = requests.get(served.url + "/metrics", timeout=10).text
    for name in ("mapper_runs_total", "mapper_invoices_delivered_total", "mapper_orders_quarantined_total",
                 "mapper_shop_failures", "mapper_shop_quarantine_open", "mapper_queue_depth",
                 "mapper_queue_oldest_due_seconds", 'mapper_shops{plan="basis",status="active"}'):
        assert name in text, name
    assert "example.nl" not in text              # shops by id only, never a name or an address
