"""The install form and the operator pages in a real browser: headless Chromium (Debian's
/usr/bin/chromium) driven by Playwright, against `mapper serve` on loopback and the CCV
simulator. A screenshot of each page is kept in test-output/screenshots/ for review."""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from helpers import FIXTURES, ROOT, pg_admin_url
from helpers import load_order
from serving import ADMIN_PASSWORD, APPS, start_serve, stop_serve
from engine.simulators.ccvshop import CCVShopSimulator
from engine.simulators.ccvshop_appstore import StoreApp
from engine.simulators.ccvshop_data import load_fixture_dir

CHROMIUM = os.environ.get("MAPPER_TEST_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("MAPPER_SCREENSHOTS", ROOT / "test-output" / "screenshots"))

# a developer's machine without chromium skips these; CI (CI_REQUIRE_BROWSER=1) fails instead
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path(CHROMIUM).exists() and os.environ.get("CI_REQUIRE_BROWSER") != "1",
                                reason=f"no browser at {CHROMIUM} (apt install chromium)")]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    name = f"mapper_browser_{secrets.token_hex(4)}"
    with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(pg_admin_url())
    s = start_serve(tmp_path_factory.mktemp("serve"), f"{parts.scheme}://{parts.netloc}/{name}")
    yield s
    stop_serve(s)
    with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_the_owner_installs_from_the_app_store(served, browser):
    sim = CCVShopSimulator(load_fixture_dir(FIXTURES), keys={})
    sim.start()
    try:
        inst = sim.install_app(StoreApp(int(APPS["basis"][0]), APPS["basis"][1], *served.app_urls("basis")))
        assert inst.handshake_status == 200
        page = browser.new_page(viewport={"width": 900, "height": 800})
        page.goto(inst.install_page_url)
        assert page.locator("h1").inner_text() == "Asperion koppeling installeren"
        assert page.locator("#shop").input_value() == sim.url and page.locator("#shop").get_attribute("readonly") is not None
        page.fill("#name", "Bakkerij Jansen")
        page.fill("#email", "eigenaar@bakkerij")
        page.fill("#licence_code", "BAS-2026-0001")
        shot(page, "install_form")
        page.click("button[type=submit]")
        assert page.locator("#email-error").inner_text() == "Dit is geen geldig e-mailadres."
        assert page.locator("#name").input_value() == "Bakkerij Jansen"            # kept
        assert page.locator("#name-error").count() == 0
        shot(page, "install_form_error")
        page.fill("#email", "eigenaar@bakkerij.example.nl")
        page.fill("#licence_code", "BAS-2026-0001")
        page.click("button[type=submit]")
        page.wait_for_url(inst.return_url)
        assert "geïnstalleerd" in page.locator("h1").inner_text()
        assert sim.app_installed(inst.api_public) and sim.return_visits == 1
        shot(page, "install_done_return_url")
        english = browser.new_page()
        english.goto(inst.install_page_url.replace("language=nl", "language=en"))
        assert english.locator("h1").inner_text() == "Connector settings"           # installed: its Edit, in English
        english.close()
        page.close()
    finally:
        sim.stop()


def test_the_operator_finds_failing_shops_and_retries_a_quarantined_order(served, browser):
    healthy = CCVShopSimulator([load_order(FIXTURES / "01_ideal_21_registered.json")], keys={"good-pub": "good-secret"})
    troubled = CCVShopSimulator(load_fixture_dir(FIXTURES), keys={"trouble-pub": "trouble-secret"})
    for s in (healthy, troubled):
        s.start()
    try:
        ids = {}
        for name, sim, pub, sec in (("Gezonde Winkel", healthy, "good-pub", "good-secret"),
                                    ("Winkel met quarantaine", troubled, "trouble-pub", "trouble-secret"),
                                    ("Winkel zonder sleutel", healthy, "revoked-pub", "revoked-secret")):
            out = served.mapper("shops", "add", name, "--api-root", sim.url, "--plan", "plus",
                                extra={"CCVSHOP_PUBLIC_KEY": pub, "CCVSHOP_SECRET_KEY": sec}).stdout
            ids[name] = out.strip().splitlines()[-1]
        served.mapper("shops", "run", "--all", "--since", "2000-01-01")
        served.mapper("worker", "--until-idle")

        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(served.url + "/admin")
        assert page.url.endswith("/admin/login")
        page.fill("#password", "not-the-password")
        page.click("button[type=submit]")
        assert page.locator("#login-error").inner_text() == "Wrong password."
        page.fill("#password", ADMIN_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(served.url + "/admin")
        cookie = next(c for c in page.context.cookies() if c["name"] == "mapper_admin")
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
        shown = {r.get_attribute("data-shop") for r in page.locator("#shops tbody tr").all()}
        assert set(ids.values()) <= shown and len(shown) == 4        # and the shop installed above
        shot(page, "admin_shops")

        page.click("#filter-attention")
        attention = {r.get_attribute("data-shop") for r in page.locator("#shops tbody tr").all()}
        assert {ids["Winkel met quarantaine"], ids["Winkel zonder sleutel"]} <= attention
        assert ids["Gezonde Winkel"] not in attention and attention < shown
        failing = page.locator(f"tr[data-shop='{ids['Winkel zonder sleutel']}']").inner_text()
        assert "1 failed run(s) in a row" in failing
        shot(page, "admin_needs_attention")

        page.click(f"a[href='/admin/shops/{ids['Winkel met quarantaine']}']")
        orders = page.locator("#quarantine tbody tr[data-order]")
        assert orders.count() == 2
        order = orders.first.get_attribute("data-order")
        shot(page, "admin_shop")
        orders.first.locator("button", has_text="Retry").click()
        notice = page.locator("#notice").inner_text()
        assert notice == f"order {order} is tried again: a run is enqueued"
        shot(page, "admin_shop_retried")

        page.goto(served.url + "/admin/summary")
        summary = page.locator("#summary tbody").inner_text()
        assert ids["Winkel zonder sleutel"] in summary and ids["Gezonde Winkel"] not in summary
        shot(page, "admin_summary")
        page.close()
    finally:
        for s in (healthy, troubled):
            s.stop()
    for secret in served.secrets:
        assert secret not in served.log()

