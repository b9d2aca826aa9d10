"""Unit tests of the auth registry, HMAC signing (CCV's vectors) and response verification."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

import pytest

from engine.io.http.auth import (AuthConfigError, AuthSpec, BearerAuth, HmacAuth, NoAuth, auth_spec, build_auth,
                                 format_date, register_auth, registered_auth_kinds)

CCV = {"kind": "hmac", "algorithm": "sha512", "public": "demo", "secret": "demo",
       "sign": "{public}|{method}|{uri}|{body}|{date}",
       "headers": {"x-public": "{public}", "x-date": "{date}", "x-hash": "{signature}"},
       "verify_response": True}

# Spec section 2: (method, uri, body, date, expected hex)
VECTORS = [
    ("GET", "/api/rest/v1/orders?is_paid=true&start=0&size=25", "", "2022-11-26T00:45:54Z",
     "e82a812bd65cbf8d19f63522f79db6778f0f10f9beb1250f847e92fce2964efb065a01305d034326823b34f2a"
     "51ee74d55a2ad201170d0e124e1ba761218e17b"),
    ("GET", "/api/rest/v1/orders/339323562/orderrows", "", "2022-11-26T00:45:54Z",
     "c554eab3dd72c97359eed212ee462a1914ed983df453c6ea41190a137b50dcae6acf176fe03e49229b8906d66"
     "7b20b3a635c164547448900ce82d5a5cd724b46"),
    ("PATCH", "/api/rest/v1/orders/339323562", '{"paid":true}', "2022-11-26T00:45:54+00:00",
     "40cda2326d40646afe8f393305a95bca6641c9b93f633acb21856de003218e6a6a01a92dbe190df5d94e1999b"
     "18171e70987037c57632727ddf27c8daa978f99"),
]


@pytest.mark.parametrize("method,uri,body,date,expected", VECTORS)
def test_ccv_test_vectors(method, uri, body, date, expected):
    auth = build_auth(CCV)
    assert auth.signature(method, uri, body, date) == expected
    assert auth.signature(method, uri, body.encode(), date) == expected  # bytes body too
    assert len(expected) == 128 and expected == expected.lower()


def test_method_is_upper_cased_in_the_string_to_sign():
    auth = build_auth(CCV)
    m, uri, body, date, expected = VECTORS[2]
    assert auth.signature("patch", uri, body, date) == expected
    assert auth.string_to_sign("get", "/x", b"", "D") == b"demo|GET|/x||D"


def test_apply_sets_the_configured_headers_with_a_utc_date_from_the_clock():
    auth = build_auth(CCV, clock=lambda: 1669423554.9)  # 2022-11-26T00:45:54Z
    headers: dict[str, str] = {}
    auth.apply("GET", VECTORS[0][1], b"", headers)
    assert headers == {"x-public": "demo", "x-date": "2022-11-26T00:45:54Z",
                       "x-hash": VECTORS[0][4]}


def test_format_date():
    assert format_date(0) == "1970-01-01T00:00:00Z"
    assert format_date(1669423554) == "2022-11-26T00:45:54Z"


def test_other_algorithm_and_templates():
    cfg = dict(CCV, algorithm="sha256", sign="{method}\n{uri}\n{date}", verify_response=False,
               headers={"Authorization": "HMAC {public}:{signature}", "Date": "{date}"})
    auth = build_auth(cfg, clock=lambda: 0)
    headers: dict[str, str] = {}
    auth.apply("GET", "/a?b=c", b"", headers)
    want = hmac.new(b"demo", b"GET\n/a?b=c\n1970-01-01T00:00:00Z", hashlib.sha256).hexdigest()
    assert headers == {"Authorization": f"HMAC demo:{want}", "Date": "1970-01-01T00:00:00Z"}


def test_response_verification():
    auth = build_auth(CCV)
    body = b'{"id":1,"href":"https:\\/\\/x"}'
    date = "2022-11-26T00:45:55Z"
    good = hmac.new(b"demo", b"demo|GET|/api/rest/v1/orders/1|" + body + b"|" + date.encode(),
                    hashlib.sha512).hexdigest()
    assert auth.verify_response("GET", "/api/rest/v1/orders/1", body,
                                {"x-date": date, "x-hash": good})
    # header names are case-insensitive even in a plain dict
    assert auth.verify_response("GET", "/api/rest/v1/orders/1", body,
                                {"X-Date": date, "X-Hash": good.upper()})
    assert not auth.verify_response("GET", "/api/rest/v1/orders/1", body + b" ",
                                    {"x-date": date, "x-hash": good})
    assert not auth.verify_response("GET", "/api/rest/v1/orders/2", body,
                                    {"x-date": date, "x-hash": good})
    assert not auth.verify_response("GET", "/api/rest/v1/orders/1", body, {"x-date": date})
    # without verify_response there is nothing to check
    assert build_auth(dict(CCV, verify_response=False)).verify_response("GET", "/", b"", {})


def test_bearer_and_none():
    bearer = build_auth({"kind": "bearer", "token": "tok-SECRET-123"})
    headers: dict[str, str] = {}
    bearer.apply("GET", "/x", b"", headers)
    assert headers == {"Authorization": "Bearer tok-SECRET-123"}
    assert isinstance(bearer, BearerAuth) and bearer.has_credentials
    assert "tok-SECRET-123" not in repr(bearer)
    custom = build_auth({"kind": "bearer", "token": "t0k", "header": "X-Api-Key", "scheme": ""})
    headers = {}
    custom.apply("GET", "/x", b"", headers)
    assert headers == {"X-Api-Key": "t0k"}
    for cfg in (None, {}, {"kind": "none"}):
        none = build_auth(cfg)
        assert isinstance(none, NoAuth) and not none.has_credentials
        headers = {}
        none.apply("GET", "/", b"", headers)
        assert headers == {}


def test_repr_never_shows_the_secret():
    auth = build_auth(dict(CCV, secret="S3CRET-value-42"))
    assert "S3CRET-value-42" not in repr(auth)
    assert "S3CRET-value-42" not in auth.describe()
    assert "S3CRET-value-42" in auth.secrets()


@pytest.mark.parametrize("change,message", [
    ({"kind": "oauth9"}, "unknown auth kind 'oauth9'; known kinds: bearer, hmac, none"),
    ({"algorithm": "sha999"}, "unknown hash algorithm 'sha999'"),
    ({"secret": ""}, "needs a non-empty 'secret'"),
    ({"public": None}, "needs a non-empty 'public'"),
    ({"sign": "{public}|{verb}"}, "uses {verb}"),
    ({"headers": {"x-hash": "{sig}"}}, "header 'x-hash'"),
    ({"headers": {"x-public": "{public}"}}, "verify_response needs one header"),
    ({"colour": "blue"}, "unknown key(s) colour"),
])
def test_invalid_configs_have_clear_messages(change, message):
    with pytest.raises(AuthConfigError) as info:
        build_auth(dict(CCV, **change))
    assert message in str(info.value)
    assert "demo|" not in str(info.value)


def test_bearer_without_token():
    with pytest.raises(AuthConfigError, match="needs a non-empty 'token'"):
        build_auth({"kind": "bearer"})


def test_register_a_new_kind():
    class QueryKey(NoAuth):
        kind = "static"
        has_credentials = True

        def __init__(self, value):
            self.value = value

        def apply(self, method, uri, body, headers):
            headers["X-Static"] = self.value

    @dataclass(frozen=True)
    class StaticSpec(AuthSpec):
        value: str = field(default="", repr=False)

        def build(self, *, clock=None):
            return QueryKey(self.value)

    register_auth("static", StaticSpec, {"value": {"type": "string"}}, ["value"])
    try:
        assert "static" in registered_auth_kinds()
        headers: dict[str, str] = {}
        build_auth({"kind": "static", "value": "v"}).apply("GET", "/", b"", headers)
        assert headers == {"X-Static": "v"}
    finally:
        from engine.io.http import auth as auth_module
        auth_module._REGISTRY.pop("static", None)


def test_hmac_direct_construction_defaults():
    auth = HmacAuth(public="demo", secret="demo")
    assert auth.signature(*VECTORS[0][:4]) == VECTORS[0][4]
    assert not auth.verifies_responses


def test_an_auth_spec_never_shows_its_secrets():
    """The specs are frozen dataclasses read once at load; their repr (a traceback's locals, a
    log line) leaves the secrets out."""
    from engine.io.http.oauth import OAuth2RefreshSpec
    from engine.io.http.spec import HttpSpec
    hmac_spec = auth_spec(dict(CCV, secret="S3CRET-value-42"))
    bearer = auth_spec({"kind": "bearer", "token": "tok-SECRET-123"})
    oauth = auth_spec({"kind": "oauth2_refresh", "token_url": "https://t.example/token", "client_id": "c",
                       "client_secret": "client-SECRET-7", "refresh_token": "refresh-SECRET-8"})
    assert isinstance(oauth, OAuth2RefreshSpec)
    http = HttpSpec.from_config({"base_url": "https://shop.example", "auth": dict(CCV, secret="S3CRET-value-42")})
    shown = " ".join(repr(x) for x in (hmac_spec, bearer, oauth, http))
    for secret in ("S3CRET-value-42", "tok-SECRET-123", "client-SECRET-7", "refresh-SECRET-8"):
        assert secret not in shown
    assert "public='demo'" in shown and "shop.example" in shown
    with pytest.raises(Exception):
        bearer.token = "changed"   # frozen
