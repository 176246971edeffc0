from __future__ import annotations

import zmq

from harli_sgl.core.message.to_worker import Heartbeat, SlotGrant
from harli_sgl.core.transport import PullQueue, PushQueue, new_ipc_path


def test_roundtrip_and_generation_filtering():
    ctx = zmq.Context()
    addr = new_ipc_path("test")
    pull = PullQueue(ctx, addr, bind=True, generation=2)
    old = PushQueue(ctx, addr, bind=False, generation=1)
    new = PushQueue(ctx, addr, bind=False, generation=2)
    assert old.send(SlotGrant(1, 100, 5.0))
    assert new.send(Heartbeat(1.5))
    got = pull.recv(2.0)
    # The generation-1 grant was queued first but belongs to a dead incarnation.
    assert got == Heartbeat(1.5)
    assert pull.recv(0.05) is None
    for q in (pull, old, new):
        q.close()
    ctx.term()


def test_recv_timeout_returns_none():
    ctx = zmq.Context()
    pull = PullQueue(ctx, new_ipc_path("test"), bind=True)
    assert pull.recv(0.01) is None
    assert pull.drain() == []
    pull.close()
    ctx.term()
