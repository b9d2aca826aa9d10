"""The time the engine believes it is: the real UTC clock, or MAPPER_NOW for reproducible output."""

from __future__ import annotations

import os
from datetime import datetime, timezone

from engine.errors import MappingError


def now() -> datetime:
    frozen = os.environ.get("MAPPER_NOW")
    if frozen:
        try:
            value = datetime.fromisoformat(frozen.replace("Z", "+00:00"))
        except ValueError:
            raise MappingError(f"MAPPER_NOW={frozen!r} is not an ISO 8601 timestamp",
                               hint="e.g. MAPPER_NOW=2026-11-26T21:00:00Z") from None
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime.now(timezone.utc)
