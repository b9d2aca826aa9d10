import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MAPPING = ROOT / "mappings" / "ccvshop_asperion.yaml"
FIXTURES = ROOT / "tests" / "fixtures" / "ccvshop"
GOLDEN = ROOT / "tests" / "golden"
FROZEN_NOW = "2026-11-26T21:00:00Z"


@pytest.fixture
def frozen_clock(monkeypatch):
    monkeypatch.setenv("MAPPER_NOW", FROZEN_NOW)
    return FROZEN_NOW


@pytest.fixture
def mapping_text():
    return MAPPING.read_text(encoding="utf-8")


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch):
    # Tests must not depend on a developer's real shop settings.
    for name in ("CCVSHOP_URL", "CCVSHOP_PUBLIC_KEY", "CCVSHOP_SECRET_KEY", "MAPPER_OUTBOX", "MAPPER_STATE"):
        monkeypatch.delenv(name, raising=False)
