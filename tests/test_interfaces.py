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
