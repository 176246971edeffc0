from __future__ import annotations

import pytest

from harli_sgl.core.dispatch import Dispatcher, UnknownMessage
from harli_sgl.core.message.to_worker import Heartbeat, Shutdown


def test_routes_by_exact_type_and_raises_on_unknown():
    seen = []
    d = Dispatcher({Heartbeat: seen.append})
    d(Heartbeat(1.0))
    assert seen == [Heartbeat(1.0)]
    assert d.handles(Heartbeat) and not d.handles(Shutdown)
    with pytest.raises(UnknownMessage, match="Shutdown"):
        d(Shutdown())
