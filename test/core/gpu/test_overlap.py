from harli_sgl.core.gpu.overlap import drain_before_launch


def test_the_normal_loop_always_drains_so_nothing_changes():
    assert not drain_before_launch(False, True, True, False, True)


def test_under_the_overlap_loop_drain_only_when_a_serial_slot_may_follow():
    assert drain_before_launch(True, worker_ready=True, has_work=True, free_run=False,
                               profiling=False)
    assert drain_before_launch(True, worker_ready=True, has_work=False, free_run=False,
                               profiling=True)
    # Serving alone keeps SGLang's overlap.
    assert not drain_before_launch(True, worker_ready=True, has_work=False, free_run=False,
                                   profiling=False)
    assert not drain_before_launch(True, worker_ready=False, has_work=True, free_run=False,
                                   profiling=False)
    # Greedy free-runs without slots: nothing to place.
    assert not drain_before_launch(True, worker_ready=True, has_work=True, free_run=True,
                                   profiling=False)


def test_on_a_cpu_the_forward_is_done_at_launch_so_the_loop_is_left_alone():
    assert not drain_before_launch(True, worker_ready=True, has_work=True, free_run=False,
                                   profiling=False, gpu=False)
