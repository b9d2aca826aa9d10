"""Tests of the Asperion REST API simulator (real HTTP on 127.0.0.1)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from engine.simulators.asperion import AsperionSimulator, asperion_sandbox

T0 = 1_790_000_000.0
CLIENT, SECRET, REFRESH, TENANT = "client-id", "client-secret", "refresh-token", "tenant-1"
INVOICES = "/v1/salesinvoiceswithlines"


class FakeClock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_sim(**kw) -> AsperionSimulator:
    kw.setdefault("clients", {CLIENT: SECRET, "other-client": "other-secret"})
    kw.setdefault("refresh_tokens", {REFRESH: CLIENT, "other-refresh": "other-client"})
    kw.setdefault("tenants", {TENANT, "tenant-2"})
    kw.setdefault("clock", FakeClock())
    return AsperionSimulator(**kw)


@pytest.fixture
def sim():
    with make_sim(debtors={TENANT: [
        {"customerNumber": "100", "name": "Jan de Vries", "emailAddress": "Jan@Example.nl",
         "countryCode": "NL"},
        {"customerNumber": "101", "name": "Marijan Bos", "emailAddress": "marijan@example.nl.test",
         "countryCode": "NL"},
        {"customerNumber": "102", "name": "Bakkerij B.V.", "emailAddress": "info@bakkerij.nl",
         "vatNumber": "NL001234567B01", "debtorKindId": 2},
    ]}) as s:
        yield s


def token(sim, refresh=REFRESH, client=CLIENT, secret=SECRET, **extra) -> requests.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": client,
            "client_secret": secret, **extra}
    return requests.post(sim.url + "/connect/token", data=data, timeout=5)


@pytest.fixture
def api(sim):
    """A tiny client: ``api(method, path, **requests_kwargs)`` with token and tenant."""
    tok = token(sim).json()["access_token"]

    def call(method, path, tenant=TENANT, **kw):
        headers = {"Authorization": f"Bearer {tok}", **kw.pop("headers", {})}
        if tenant is not None:
            headers["X-Tenant-Id"] = tenant
        kw.setdefault("timeout", 5)
        return requests.request(method, sim.url + path, headers=headers, **kw)
    return call


def invoice_body(**over) -> dict:
    body = {"date": "2026-11-20", "description": "Bestelling 10234",
            "debtorCustomerNumber": "100", "journalId": 1, "paymentConditionId": 1,
            "lines": {"_data": [
                {"description": "Koffiebonen", "amount": 20.00, "vatAmount": 1.80, "vatCode": "VL",
                 "ledgerAccountId": 102},
                {"description": "Verzendkosten", "amount": 4.13, "vatAmount": 0.87,
                 "vatCode": "VH", "ledgerAccountId": 106}]}}
    body.update(over)
    return body


def line(**over) -> dict:
    ln = {"description": "x", "amount": 10.00, "vatAmount": 2.10, "vatCode": "VH",
          "ledgerAccountId": 101}
    ln.update(over)
    return ln


# ---------------------------------------------------------------- OAuth2
def test_token_flow_rotates_refresh_token(sim):
    r = token(sim)
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["access_token"] and body["refresh_token"] != REFRESH
    assert r.headers["Cache-Control"] == "no-store"
    # the used refresh token is dead at once; the new one works (and rotates again)
    again = token(sim)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    r2 = token(sim, refresh=body["refresh_token"])
    assert r2.status_code == 200 and r2.json()["refresh_token"] not in (REFRESH, body["refresh_token"])
    assert REFRESH not in sim.refresh_tokens and r2.json()["refresh_token"] in sim.refresh_tokens


def test_token_without_rotation_keeps_refresh_token():
    with make_sim(rotate_refresh_tokens=False) as s:
        assert token(s).json()["refresh_token"] == REFRESH
        assert token(s).status_code == 200


def test_token_bad_credentials(sim):
    assert token(sim, secret="wrong").json()["error"] == "invalid_client"
    assert token(sim, secret="wrong").status_code == 400
    assert token(sim, client="nobody").json()["error"] == "invalid_client"
    assert token(sim, refresh="nope").json()["error"] == "invalid_grant"
    # a refresh token of another client
    r = token(sim, refresh="other-refresh")
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = token(sim, grant_type="authorization_code")
    assert r.json()["error"] == "unsupported_grant_type"
    # failed attempts did not burn the token
    assert token(sim).status_code == 200
    # client credentials by HTTP Basic also work
    r = requests.post(sim.url + "/connect/token", auth=(CLIENT, SECRET), timeout=5,
                      data={"grant_type": "refresh_token", "refresh_token": "other-refresh"})
    assert r.json()["error"] == "invalid_grant"


def test_bearer_required_and_expiry(sim):
    r = requests.get(sim.url + "/v1/debtors", headers={"X-Tenant-Id": TENANT}, timeout=5)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert r.json()["status"] == 401 and r.json()["traceId"]
    r = requests.get(sim.url + "/v1/debtors", timeout=5,
                     headers={"X-Tenant-Id": TENANT, "Authorization": "Bearer bogus"})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]

    body = token(sim).json()
    hdr = {"X-Tenant-Id": TENANT, "Authorization": f"Bearer {body['access_token']}"}
    assert requests.get(sim.url + "/v1/debtors", headers=hdr, timeout=5).status_code == 200
    sim.clock.t += 3599
    assert requests.get(sim.url + "/v1/debtors", headers=hdr, timeout=5).status_code == 200
    sim.clock.t += 1
    r = requests.get(sim.url + "/v1/debtors", headers=hdr, timeout=5)
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert "expired" in r.headers["WWW-Authenticate"]
    # refresh and carry on
    new = token(sim, refresh=body["refresh_token"]).json()["access_token"]
    hdr["Authorization"] = f"Bearer {new}"
    assert requests.get(sim.url + "/v1/debtors", headers=hdr, timeout=5).status_code == 200


def test_tenant_header(sim, api):
    r = api("GET", "/v1/debtors", tenant=None)
    assert r.status_code == 400 and "X-Tenant-Id" in r.json()["errors"]
    r = api("GET", "/v1/debtors", tenant="someone-else")
    assert r.status_code == 403 and r.json()["title"] == "Forbidden"
    # administrations need no tenant
    r = api("GET", "/v1/administrations", tenant=None)
    assert r.status_code == 200
    assert sorted(a["id"] for a in r.json()["_data"]) == ["tenant-1", "tenant-2"]
    # data is per tenant
    assert r.json()["_meta"]["totalCount"] == 2
    assert api("GET", "/v1/debtors").json()["_meta"]["totalCount"] == 3
    assert api("GET", "/v1/debtors", tenant="tenant-2").json()["_data"] == []
    r = api("POST", "/v1/debtors", tenant="tenant-2", json={"customerNumber": "100", "name": "X"})
    assert r.status_code == 201  # the same number is free in the other administration
    assert len(sim.debtors("tenant-2")) == 1 and len(sim.debtors(TENANT)) == 3


# ---------------------------------------------------------------- debtors
def test_debtor_search_contains_case_insensitive(api):
    r = api("GET", "/v1/debtors", params={"EmailAddress": "jan@example.nl"})
    found = sorted(d["customerNumber"] for d in r.json()["_data"])
    assert found == ["100", "101"]  # "marijan@example.nl.test" contains it too
    exact = [d for d in r.json()["_data"] if d["emailAddress"].lower() == "jan@example.nl"]
    assert [d["customerNumber"] for d in exact] == ["100"]
    # parameter names and values are case-insensitive
    r = api("GET", "/v1/debtors", params={"emailaddress": "BAKKERIJ"})
    assert [d["customerNumber"] for d in r.json()["_data"]] == ["102"]
    assert api("GET", "/v1/debtors?CustomerNumber=10").json()["_data"] == []
    assert len(api("GET", "/v1/debtors?CustomerNumber=101").json()["_data"]) == 1
    assert len(api("GET", "/v1/debtors?Name=de%20vries").json()["_data"]) == 1
    assert len(api("GET", "/v1/debtors?VatNumber=nl001234567").json()["_data"]) == 1
    one = api("GET", "/v1/debtors?CustomerNumber=102").json()["_data"][0]
    assert api("GET", f"/v1/debtors/{one['id']}").json() == one
    assert api("GET", "/v1/debtors/999999").status_code == 404


def test_debtor_paging_follows_next_page(api):
    r = api("GET", "/v1/debtors", params={"pageSize": 2, "Name": ""})
    meta = r.json()["_meta"]
    assert meta == {"totalCount": 3, "pageCount": 2, "currentPage": 1, "pageSize": 2,
                    "nextPage": meta["nextPage"], "previousPage": None}
    assert meta["nextPage"].startswith("http://127.0.0.1:") and "page=2" in meta["nextPage"]
    assert "Name=" in meta["nextPage"]  # other parameters are kept
    r2 = api("GET", meta["nextPage"][len(meta["nextPage"].split("/v1/")[0]):])
    assert len(r2.json()["_data"]) == 1 and r2.json()["_meta"]["nextPage"] is None
    assert "page=1" in r2.json()["_meta"]["previousPage"]
    assert api("GET", "/v1/debtors?page=0").status_code == 400
    assert api("GET", "/v1/debtors?pageSize=abc").json()["errors"]["pageSize"]
    assert api("GET", "/v1/debtors?pageSize=5000").json()["_meta"]["pageSize"] == 100


def test_create_debtor_and_duplicate(sim, api):
    body = {"customerNumber": "200", "name": "Piet Jansen", "address": "Dorpsstraat 1",
            "postCode": "1234 AB", "city": "Utrecht", "countryCode": "NL",
            "emailAddress": "piet@example.nl", "phoneNumber": "0612345678", "debtorKindId": 1}
    r = api("POST", "/v1/debtors", json=body)
    assert r.status_code == 201
    created = r.json()
    assert isinstance(created["id"], int) and {k: created[k] for k in body} == body
    assert sim.created_debtors == [created]
    assert sim.post_counts["/v1/debtors"] == 1
    r = api("POST", "/v1/debtors", json={**body, "name": "Someone else"})
    assert r.status_code == 400
    p = r.json()
    assert set(p) >= {"title", "status", "detail", "traceId", "errors"}
    assert list(p["errors"]) == ["CustomerNumber"] and "200" in p["errors"]["CustomerNumber"][0]
    assert len(sim.created_debtors) == 1
    # field validation, all at once
    r = api("POST", "/v1/debtors", json={"customerNumber": 201, "countryCode": "Nederland",
                                         "emailAddress": "no-at-sign", "vatNumber": "NL 123",
                                         "debtorKindId": 7})
    errors = r.json()["errors"]
    assert set(errors) == {"CustomerNumber", "Name", "CountryCode", "EmailAddress", "VatNumber",
                           "DebtorKindId"}
    # Dutch error texts on request
    r = api("POST", "/v1/debtors", json={"customerNumber": "202"},
            headers={"Accept-Language": "nl-NL"})
    assert r.json()["errors"]["Name"] == ["Het veld Name is verplicht."]
    r = api("POST", "/v1/debtors", data=b"{", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    r = api("POST", "/v1/debtors", data="customerNumber=1", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415


def test_validate_only_creates_nothing(sim, api):
    body = {"customerNumber": "300", "name": "Test", "emailAddress": "t@example.nl"}
    r = api("POST", "/v1/debtors?validateOnly=true", json=body)
    assert r.status_code == 200 and r.json()["id"] is None
    assert api("POST", "/v1/debtors?validateOnly=true", json={"name": "x"}).status_code == 400
    r = api("POST", INVOICES + "?validateOnly=true", json=invoice_body())
    assert r.status_code == 200 and r.json()["id"] is None and r.json()["status"] == 1
    r = api("POST", INVOICES + "?validateOnly=true", json=invoice_body(debtorCustomerNumber="nope"))
    assert r.status_code == 400
    assert sim.created_debtors == [] and sim.created_invoices == []
    assert api("GET", "/v1/debtors?CustomerNumber=300").json()["_data"] == []
    assert sim.post_counts == {"/v1/debtors": 2, "/v1/salesinvoiceswithlines": 2,
                               "/connect/token": 1}


# ---------------------------------------------------------------- reference data
def test_vat_codes_listing_and_paging(api):
    r = api("GET", "/v1/vatcodes")
    codes = r.json()["_data"]
    assert r.json()["_meta"]["totalCount"] == len(codes) >= 8
    for c in codes:
        assert set(c) >= {"id", "description", "salesCode", "percentage", "countryCode",
                          "validFrom", "validUntil"}
    by_code = {c["salesCode"]: c for c in codes if c["salesCode"]}
    assert by_code["VH"]["percentage"] == 21 and by_code["VL"]["validFrom"] == "2019-01-01"
    assert by_code["VL6"]["percentage"] == 6 and by_code["VL6"]["validUntil"] == "2018-12-31"
    icp = [c for c in codes if c.get("intraCommunity")]
    assert len(icp) == 1 and icp[0]["percentage"] == 0 and icp[0]["countryCode"] is None
    assert {c["countryCode"] for c in codes if c["countryCode"]} == {"BE", "DE"}
    pages, url = [], "/v1/vatcodes?pageSize=4"
    while url:
        body = api("GET", url).json()
        pages.append(body["_data"])
        nxt = body["_meta"]["nextPage"]
        url = nxt[nxt.index("/v1/"):] if nxt else None
    assert [len(p) for p in pages] == [4, 4, len(codes) - 8]
    assert [c for p in pages for c in p] == codes
    for path in ("/v1/journals", "/v1/paymentconditions", "/v1/ledgeraccounts"):
        r = api("GET", path)
        assert r.status_code == 200 and r.json()["_data"] and r.json()["_meta"]["totalCount"]


# ---------------------------------------------------------------- invoices
def test_create_invoice_concept_and_lookup(sim, api):
    r = api("POST", INVOICES, json=invoice_body())
    assert r.status_code == 201
    inv = r.json()
    assert inv["status"] == 1 and inv["invoiceNumber"] is None and isinstance(inv["id"], int)
    assert inv["debtorCustomerNumber"] == "100" and len(inv["lines"]["_data"]) == 2
    assert Decimal(str(inv["totalAmountInclVat"])) == Decimal("26.80")
    # the test accessors keep amounts as Decimal
    assert sim.created_invoices == [json.loads(r.text, parse_float=Decimal)]
    assert sim.created_invoices[0]["totalVatAmount"] == Decimal("2.67")
    assert api("GET", f"{INVOICES}/{inv['id']}").json() == inv
    assert api("GET", f"{INVOICES}/12345").status_code == 404
    found = api("GET", INVOICES, params={"Description": "Bestelling 10234"}).json()["_data"]
    assert [i["id"] for i in found] == [inv["id"]]
    # exact match only
    assert api("GET", INVOICES, params={"Description": "Bestelling 1023"}).json()["_data"] == []
    assert api("GET", INVOICES, params={"Description": "bestelling 10234"}).json()["_data"] == []
    # a negative line (discount) and an OSS code are fine; the vatCode may be the id as well
    body = invoice_body(description="Bestelling 10235", lines={"_data": [
        line(amount=100, vatAmount=19, vatCode="OSSDE19", ledgerAccountId=105),
        line(amount=-10, vatAmount=-1.9, vatCode=8, ledgerAccountId=105)]})
    assert api("POST", INVOICES, json=body).status_code == 201
    # 6% was valid in 2018
    old = invoice_body(date="2018-06-01", description="Bestelling 9",
                       lines={"_data": [line(amount=10, vatAmount=0.6, vatCode="VL6")]})
    assert api("POST", INVOICES, json=old).status_code == 201


def test_invoice_validation_errors(sim, api):
    def errors(**over):
        r = api("POST", INVOICES, json=invoice_body(**over))
        assert r.status_code == 400, r.text
        p = r.json()
        assert p["title"] and p["status"] == 400 and p["traceId"] and p["detail"]
        return p["errors"]

    e = errors(lines={"_data": [line(vatCode="XX")]})
    assert list(e) == ["Lines[0].VatCode"] and "XX" in e["Lines[0].VatCode"][0]
    e = errors(lines={"_data": [line(), line(vatCode="VL6")]})  # 6% not valid in 2026
    assert list(e) == ["Lines[1].VatCode"] and "2018-12-31" in e["Lines[1].VatCode"][0]
    e = errors(date="2018-12-31", lines={"_data": [line(vatCode="VL", vatAmount=0.9)]})
    assert list(e) == ["Lines[0].VatCode"]  # 9% starts 2019-01-01
    e = errors(lines={"_data": [line(vatAmount=2.12)]})
    assert list(e) == ["Lines[0].VatAmount"] and "2.10" in e["Lines[0].VatAmount"][0]
    assert api("POST", INVOICES, json=invoice_body(
        lines={"_data": [line(vatAmount=2.11)]})).status_code == 201  # within 0.01
    e = errors(debtorCustomerNumber="999")
    assert list(e) == ["DebtorCustomerNumber"] and "999" in e["DebtorCustomerNumber"][0]
    e = errors(description=None, date=None, journalId=None)
    assert set(e) == {"Description", "Date", "JournalId"}
    e = errors(date="26-11-2026", journalId=99, paymentConditionId=42)
    assert set(e) == {"Date", "JournalId", "PaymentConditionId"}
    e = errors(lines={"_data": []})
    assert list(e) == ["Lines"]
    e = errors(lines={"_data": [line(amount=1.005, vatCode=9, ledgerAccountId=None)]})
    assert set(e) == {"Lines[0].Amount", "Lines[0].VatCode", "Lines[0].LedgerAccountId"}
    assert len(sim.created_invoices) == 1  # only the one within tolerance


# ---------------------------------------------------------------- faults
def test_faults_429_503_500(sim, api):
    sim.inject("429", count=1, retry_after=7)
    r = api("GET", "/v1/vatcodes")
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    assert r.json()["status"] == 429
    assert api("GET", "/v1/vatcodes").status_code == 200  # count expired
    sim.inject("429", count=1)
    assert "Retry-After" not in api("GET", "/v1/vatcodes").headers
    sim.inject("503", count=1, retry_after=2)
    r = api("GET", "/v1/journals")
    assert r.status_code == 503 and r.headers["Retry-After"] == "2"
    sim.inject("503", count=1, html=True)
    r = api("GET", "/v1/journals")
    assert r.status_code == 503 and r.headers["Content-Type"].startswith("text/html")
    sim.inject("500", count=2, path_contains="debtors")
    assert api("GET", "/v1/vatcodes").status_code == 200  # other path unaffected
    assert api("POST", "/v1/debtors", json={"customerNumber": "9", "name": "N"}).status_code == 500
    assert api("GET", "/v1/debtors").status_code == 500
    assert api("GET", "/v1/debtors").status_code == 200
    assert sim.created_debtors == []  # a faulted request is not processed
    # faults hit the token endpoint as well
    sim.inject("503", count=1, path_contains="/connect/token")
    assert token(sim).status_code == 503
    statuses = [s for (_, _, s) in sim.request_log]
    assert statuses.count(429) == 2 and statuses.count(503) == 3 and statuses.count(500) == 2


def test_fault_rate_and_clear(sim, api):
    sim.inject("500", rate=0.5)
    codes = [api("GET", "/v1/journals").status_code for _ in range(40)]
    assert 5 < codes.count(500) < 35 and codes.count(200) > 5
    sim.clear_faults()
    assert all(api("GET", "/v1/journals").status_code == 200 for _ in range(5))


def test_fault_slow(sim, api):
    sim.inject("slow", count=1, delay=0.3)
    t = time.monotonic()
    assert api("GET", "/v1/journals").status_code == 200
    assert time.monotonic() - t >= 0.3
    with pytest.raises(requests.exceptions.ReadTimeout):
        sim.inject("slow", count=1, delay=0.5)
        api("GET", "/v1/journals", timeout=0.1)


def test_fault_drop(sim, api):
    sim.inject("drop", count=1, method="POST")
    with pytest.raises(requests.exceptions.ConnectionError):
        api("POST", "/v1/debtors", json={"customerNumber": "9", "name": "N"})
    assert sim.created_debtors == []
    assert sim.request_log[-1] == ("POST", "/v1/debtors", 0)
    assert api("POST", "/v1/debtors", json={"customerNumber": "9", "name": "N"}).status_code == 201


def test_fault_expire_token(sim):
    body = token(sim).json()
    hdr = {"X-Tenant-Id": TENANT, "Authorization": f"Bearer {body['access_token']}"}
    sim.inject("expire_token", count=1)
    assert token(sim, refresh=body["refresh_token"]).status_code == 200  # not on /connect
    r = requests.get(sim.url + "/v1/journals", headers=hdr, timeout=5)
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    # the token stays dead, as an expired one would
    assert requests.get(sim.url + "/v1/journals", headers=hdr, timeout=5).status_code == 401
    assert [s for (_, p, s) in sim.request_log if p == "/v1/journals"] == [401, 401]
    # sim.expire_tokens() does the same to every access token at once
    new = token(sim, refresh=sim.refresh_tokens and next(iter(
        t for t, c in sim.refresh_tokens.items() if c == CLIENT))).json()["access_token"]
    hdr["Authorization"] = f"Bearer {new}"
    assert requests.get(sim.url + "/v1/journals", headers=hdr, timeout=5).status_code == 200
    sim.expire_tokens()
    assert requests.get(sim.url + "/v1/journals", headers=hdr, timeout=5).status_code == 401


def test_fault_lost_response_processes_then_drops(sim, api):
    sim.inject("lost_response", count=1, path_contains=INVOICES)
    # a GET on the same path is not affected by default
    assert api("GET", INVOICES).status_code == 200
    with pytest.raises(requests.exceptions.ConnectionError):
        api("POST", INVOICES, json=invoice_body())
    assert len(sim.created_invoices) == 1
    assert sim.request_log[-1] == ("POST", INVOICES, 0)
    assert sim.post_counts[INVOICES] == 1
    # the adopt-after-crash lookup finds it
    found = api("GET", INVOICES, params={"Description": "Bestelling 10234"}).json()["_data"]
    assert [i["id"] for i in found] == [sim.created_invoices[0]["id"]]
    # debtors too
    sim.inject("lost_response", count=1, path_contains="/v1/debtors")
    with pytest.raises(requests.exceptions.ConnectionError):
        api("POST", "/v1/debtors", json={"customerNumber": "700", "name": "Lost"})
    assert [d["customerNumber"] for d in sim.created_debtors] == ["700"]
    assert api("POST", "/v1/debtors", json={"customerNumber": "700", "name": "Lost"}).status_code == 400


# ---------------------------------------------------------------- demo entry points
def test_sandbox_and_cli():
    with asperion_sandbox() as sb:
        assert set(sb) >= {"url", "client_id", "client_secret", "refresh_token", "tenant"}
        r = requests.post(sb["url"] + "/connect/token", timeout=5, data={
            "grant_type": "refresh_token", "refresh_token": sb["refresh_token"],
            "client_id": sb["client_id"], "client_secret": sb["client_secret"]})
        tok = r.json()["access_token"]
        r = requests.get(sb["url"] + "/v1/vatcodes", timeout=5, headers={
            "Authorization": f"Bearer {tok}", "X-Tenant-Id": sb["tenant"]})
        assert r.status_code == 200
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "engine.simulators.asperion", "--port", "0"],
                            cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("Asperion simulator at http://127.0.0.1:")
        url = first.split(" at ")[1].strip()
        assert requests.get(url + "/v1/journals", timeout=5).status_code == 401
        rest = [proc.stdout.readline() for _ in range(4)]
        assert any("client_id: demo-client" in line for line in rest)
    finally:
        proc.terminate()
        proc.wait(timeout=5)
