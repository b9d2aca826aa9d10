"""Credentials never travel to another host, token errors are scrubbed, and the Asperion list
walk has a loop guard (issue: nothing lost, nothing let in, 3 and 8). Real loopback servers:
one that redirects and one that records whatever reaches it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine.io.http.client import HttpClient, HttpError
from engine.io.http.oauth import OAuth2RefreshAuth, TokenError
from engine.io.http.pagination import PaginationError

SECRET, REFRESH = "client-secret-XYZ123", "refresh-token-ABC789"


class Server:
    """A loopback server; ``answer(handler)`` decides; every request is recorded."""

    def __init__(self, answer):
        self.seen: list[tuple[str, str, dict, bytes]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.seen.append((self.command, self.path, dict(self.headers), body))
                answer(self)

            do_GET = do_POST = do_PUT = _any

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def reply(h, status, body=b"", headers=()):
    h.send_response(status)
    for k, v in headers:
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


@pytest.fixture
def elsewhere():
    s = Server(lambda h: reply(h, 200, b'{"access_token": "stolen", "expires_in": 60}',
                               [("Content-Type", "application/json")]))
    yield s
    s.close()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_the_token_request_never_follows_a_redirect(elsewhere, status):
    redirecting = Server(lambda h: reply(h, status, headers=[("Location", elsewhere.url + "/token")]))
    try:
        auth = OAuth2RefreshAuth(token_url=redirecting.url + "/token", client_id="c", client_secret=SECRET,
                                 refresh_token=REFRESH, name="Asperion")
        with pytest.raises(TokenError) as err:
            auth.apply("GET", "/x", "", {})
    finally:
        redirecting.close()
    assert elsewhere.seen == [], "the credentials went to the other host"
    assert f"answered HTTP {status}, a redirect to 127.0.0.1" in str(err.value)
    assert SECRET not in str(err.value) and REFRESH not in str(err.value)


def test_a_token_servers_error_text_is_scrubbed_of_our_credentials():
    echo = Server(lambda h: reply(h, 400, json.dumps(
        {"error": f"invalid_grant {REFRESH} for {SECRET}"}).encode(), [("Content-Type", "application/json")]))
    try:
        auth = OAuth2RefreshAuth(token_url=echo.url + "/token", client_id="c", client_secret=SECRET,
                                 refresh_token=REFRESH, name="Asperion")
        with pytest.raises(TokenError) as err:
            auth.apply("GET", "/x", "", {})
    finally:
        echo.close()
    text = str(err.value)
    assert "invalid_grant" in text and REFRESH not in text and SECRET not in text


@pytest.mark.parametrize("auth", [
    {"kind": "hmac", "public": "pub-key", "secret": "hmac-secret-QQ"},
    {"kind": "bearer", "token": "bearer-token-WW"},
])
def test_a_signed_or_bearer_request_is_not_sent_on_after_a_redirect(elsewhere, auth):
    redirecting = Server(lambda h: reply(h, 307, headers=[("Location", elsewhere.url + "/api/orders")]))
    try:
        client = HttpClient({"base_url": redirecting.url, "auth": auth, "retries": {"attempts": 1}})
        with pytest.raises(HttpError) as err:
            client.request("GET", "/api/orders")
    finally:
        redirecting.close()
    assert elsewhere.seen == []
    assert "redirects are not followed" in str(err.value)


def test_the_asperion_list_walk_stops_on_a_page_that_comes_back(tmp_path):
    """A nextPage link that points back to a page already read: before, an endless loop."""
    from engine.config.mapping import load_mapping
    from engine.io.sinks.api import ApiDestination
    from helpers import ROOT

    loop = Server(lambda h: reply(h, 200, json.dumps(
        {"_data": [{"id": 1}], "_meta": {"nextPage": "/v1/debtors?page=2" if "page=2" not in h.path
                                          else "/v1/debtors?page=2"}}).encode(),
        [("Content-Type", "application/json")]))
    try:
        env = {"ASPERION_CLIENT_ID": "c", "ASPERION_CLIENT_SECRET": "s", "ASPERION_REFRESH_TOKEN": "r",
               "ASPERION_TENANT_ID": "t", "ASPERION_URL": loop.url, "ASPERION_TOKEN_URL": loop.url + "/token"}
        m = load_mapping(ROOT / "mappings" / "ccvshop_asperion_api.yaml", environ=env)
        client = HttpClient({"base_url": loop.url, "retries": {"attempts": 1}})
        dest = ApiDestination(m, client=client)
        if not dest.spec.next_key:
            pytest.fail("the API mapping declares no next-page link")
        with pytest.raises(PaginationError, match="a second time"):
            list(dest.get_all("/v1/debtors"))
    finally:
        loop.close()
    assert len(loop.seen) == 2
