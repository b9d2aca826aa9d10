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
def _no_ambient_credentials(monkeypatch, tmp_path):
    # Tests must not depend on a developer's real shop settings.
    for name in ("CCVSHOP_URL", "CCVSHOP_PUBLIC_KEY", "CCVSHOP_SECRET_KEY", "MAPPER_OUTBOX", "MAPPER_STATE",
                 "MAPPER_PLAN", "MAPPER_NOW"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAPPER_DEBTOR_KEY", "test-register-key-0123456789")
    monkeypatch.setenv("MAPPER_STATE", str(tmp_path / "default-state.sqlite"))
    monkeypatch.setenv("MAPPER_REPORTS", str(tmp_path / "reports"))
