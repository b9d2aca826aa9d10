"""The state store: what went where, what waits in quarantine, who is running.

The engine uses only what this package exports; backends live behind :class:`StateStore`.

    from engine.ops.state import open_state, OrderRef
    with open_state(path) as state, state.run_lock("ccvshop-asperion", wait_seconds=30):
        state.create_batch(mapping, batch_id, file_name, [OrderRef("123", "10234", day)])
        ...  # write the file, rename it into place
        state.mark_delivered(batch_id, checksum, now)
"""

from engine.ops.state import base as _base
from engine.ops.state.base import *  # noqa: F401,F403 - the public names are base's __all__

__all__ = list(_base.__all__)
