"""The engine's seams: every sink implements the Sink protocol, sections are typed once."""

import dataclasses
import inspect

import pytest

from engine.config.mapping import load_mapping
from engine.config.specs import SinkSpec, WebhookSpec
from engine.io.sinks import Sink
from engine.io.sinks.api import ApiSink
from engine.io.sinks.directory import DirectorySink
from engine.io.sinks.preview import PreviewSink
from helpers import MAPPING

PROTOCOL = [name for name in ("prepare", "recover", "accept", "finish", "close") if hasattr(Sink, name)]


@pytest.mark.parametrize("sink", [DirectorySink, ApiSink, PreviewSink])
def test_every_sink_has_the_protocols_methods_with_its_arguments(sink):
    assert PROTOCOL == ["prepare", "recover", "accept", "finish", "close"]
    for name in PROTOCOL:
        ours = list(inspect.signature(getattr(sink, name)).parameters)
        theirs = list(inspect.signature(getattr(Sink, name)).parameters)
        assert ours == theirs, f"{sink.__name__}.{name}{ours} is not Sink.{name}{theirs}"
    assert hasattr(sink, "pending")


def test_sections_are_read_once_into_frozen_specs():
    m = load_mapping(MAPPING)
    assert isinstance(m.webhooks, WebhookSpec) and isinstance(m.sink, SinkSpec)
    assert "orders.updated.ispaid" in m.webhooks.events
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.webhooks.max_per_day = 1   # type: ignore[misc]
    # one set of defaults: a mapping that declares no webhook section gets the listener's
    bare = WebhookSpec.from_config(None)
    assert bare.events == ("orders.updated.ispaid",) and bare.max_lookups_per_run == 500
    assert m.customer_directory.kind in ("in_file", "register", "api")


def test_the_registries_of_auth_kinds_and_paginators_drive_the_schema(tmp_path, monkeypatch):
    """A kind registered in the engine is accepted by the mapping schema with its own options
    (dlt's register_auth/register_paginator model); one that is not is refused, the known
    kinds listed."""
    from engine.errors import MapperError
    from engine.io.http import auth, pagination
    text = MAPPING.read_text("utf-8")
    assert "kind: hmac" in text and "{kind: next_link," in text
    edited = tmp_path / "m.yaml"
    edited.write_text(text.replace("kind: hmac", "kind: hmac_v2").replace("{kind: next_link,", "{kind: cursor,", 1), "utf-8")
    with pytest.raises(MapperError) as refused:
        load_mapping(edited)
    assert "must be one of: hmac, bearer, none, oauth2_refresh" in str(refused.value)

    hmac = auth._REGISTRY["hmac"]
    monkeypatch.setitem(auth._REGISTRY, "hmac_v2", auth.AuthKind(hmac.spec, hmac.options, hmac.required))

    class CursorPaginator(pagination.NextLinkPaginator):
        kind = "cursor"
        description = "a cursor"
        options = {**pagination.NextLinkPaginator.options, "cursor_field": {"type": "string"}}
    monkeypatch.setitem(pagination._REGISTRY, "cursor", CursorPaginator)
    m = load_mapping(edited)
    assert m.located.data["source"]["http"]["auth"]["kind"] == "hmac_v2"
    # its own options are checked: a key no registered paginator reads is refused
    edited.write_text(edited.read_text("utf-8").replace("{kind: cursor,", "{kind: cursor, cursor_fieldd: x,", 1), "utf-8")
    with pytest.raises(MapperError) as typo:
        load_mapping(edited)
    assert "cursor_fieldd" in str(typo.value)


API_ENV = {"ASPERION_URL": "https://api.asperion.test", "ASPERION_TENANT_ID": "tenant-1",
           "ASPERION_CLIENT_ID": "client-1", "ASPERION_CLIENT_SECRET": "client-SECRET-1",
           "ASPERION_REFRESH_TOKEN": "refresh-SECRET-1", "CCVSHOP_URL": "https://shop-1.test",
           "CCVSHOP_PUBLIC_KEY": "pub-1", "CCVSHOP_SECRET_KEY": "ccv-SECRET-1"}


def test_a_shop_is_bound_by_reading_source_and_destination_http_again(tmp_path):
    """Hosted mode compiles once and reads a shop's URL and keys per run (reread_sections);
    neither the loaded mapping's repr nor its specs' show a key; a ${VAR} in the compiled
    part of destination.api that differs per shop is refused, not silently kept."""
    from engine.config.mapping import reread_sections
    from engine.errors import MappingError
    from helpers import ROOT
    api = ROOT / "mappings" / "ccvshop_asperion_api.yaml"
    m = load_mapping(api, environ=API_ENV)
    shop2 = reread_sections(m, API_ENV | {"CCVSHOP_URL": "https://shop-2.test", "ASPERION_TENANT_ID": "tenant-2",
                                          "CCVSHOP_SECRET_KEY": "ccv-SECRET-2"})
    assert m.source_http().base_url == "https://shop-1.test"
    assert shop2.source_http().base_url == "https://shop-2.test"
    assert shop2.destination_http().headers["X-Tenant-Id"] == "tenant-2"
    assert shop2.destination is m.destination        # compiled once
    shown = repr(m) + repr(shop2) + repr(shop2.source_spec()) + repr(shop2.destination_http())
    for secret in ("client-SECRET-1", "refresh-SECRET-1", "ccv-SECRET-1", "ccv-SECRET-2"):
        assert secret not in shown

    edited = tmp_path / "api.yaml"
    text = api.read_text("utf-8")
    assert "path: /v1/debtors" in text
    edited.write_text(text.replace("path: /v1/debtors", "path: /v1/${ASPERION_TENANT_ID}/debtors", 1), "utf-8")
    per_tenant = load_mapping(edited, environ=API_ENV)
    assert reread_sections(per_tenant, API_ENV).destination is per_tenant.destination
    with pytest.raises(MappingError) as refused:
        reread_sections(per_tenant, API_ENV | {"ASPERION_TENANT_ID": "tenant-2"})
    assert "compiled once for all shops" in str(refused.value)
