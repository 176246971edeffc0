from harli_sgl.core.gpu.corun_means import Means, MeansChoice, Why, decide
from harli_sgl.core.gpu.host import HostFacts, mps_running, read_host

H200 = HostFacts(gpu=True, mps_running=True, mps_control=True, green_contexts=True,
                 sm_count=132, bf16=True)


def test_a_cpu_host_co_runs_on_its_split_or_not_at_all():
    choice = decide(HostFacts(), 0.5, may_start_mps=True)
    assert (choice.means, choice.why, choice.start_mps) == (Means.CPU_SPLIT, Why.CPU_SPLIT, False)
    assert choice.corun
    none = decide(HostFacts(), 0.0, may_start_mps=True)
    assert (none.means, none.why) == (Means.SERIAL, Why.NO_SPLIT) and not none.corun


def test_share_zero_is_serial_slots_even_with_mps():
    choice = decide(H200, 0.0, may_start_mps=True)
    assert (choice.means, choice.why) == (Means.SERIAL, Why.NO_SHARE)
    assert choice.status()["corun_unavailable_reason"] == Why.NO_SHARE.text


def test_without_mps_and_without_permission_slots_are_serial_never_timesliced():
    facts = HostFacts(gpu=True, mps_running=False, mps_control=True, green_contexts=True,
                      sm_count=132)
    choice = decide(facts, 0.5, may_start_mps=False)
    assert (choice.means, choice.why, choice.start_mps) == (Means.SERIAL, Why.NO_MPS, False)
    status = choice.status()
    assert status["corun_means"] == "serial" and "time-slice" in status["corun_unavailable_reason"]


def test_with_permission_harli_starts_mps_then_decides_again():
    facts = HostFacts(gpu=True, mps_running=False, mps_control=True, green_contexts=True,
                      sm_count=132)
    first = decide(facts, 0.5, may_start_mps=True)
    assert first.start_mps and first.why is Why.START_MPS and not first.corun
    # The daemon came up: green contexts are the means.
    up = decide(HostFacts(**{**facts.__dict__, "mps_running": True}), 0.5, may_start_mps=True)
    assert (up.means, up.start_mps) == (Means.MPS_GREEN, False)
    # It did not: serial, with the reason, and no second attempt.
    failed = decide(facts, 0.5, may_start_mps=True, start_failed=True)
    assert (failed.means, failed.why, failed.start_mps) == (Means.SERIAL, Why.MPS_START_FAILED, False)


def test_permission_without_the_control_binary_is_serial():
    facts = HostFacts(gpu=True, mps_running=False, mps_control=False)
    choice = decide(facts, 0.5, may_start_mps=True)
    assert (choice.means, choice.why, choice.start_mps) == (Means.SERIAL, Why.NO_MPS_CONTROL, False)


def test_mps_without_green_contexts_is_a_fixed_share():
    facts = HostFacts(gpu=True, mps_running=True, green_contexts=False, sm_count=132)
    choice = decide(facts, 0.5, may_start_mps=False)
    assert (choice.means, choice.why) == (Means.MPS_FIXED, Why.FIXED)
    assert choice.corun and choice.status()["corun_unavailable_reason"] is None


def test_mps_with_green_contexts():
    choice = decide(H200, 0.5, may_start_mps=False)
    assert (choice.means, choice.why) == (Means.MPS_GREEN, Why.GREEN)


def test_the_host_reader_on_a_host_without_a_gpu(tmp_path):
    assert read_host(False) == HostFacts()
    assert not mps_running(str(tmp_path))
    (tmp_path / "control").write_text("")
    assert mps_running(str(tmp_path))


def test_a_worker_without_its_green_contexts_turns_co_running_off_until_one_has_them():
    from harli_sgl.core.gpu.corun_means import after_worker_start

    green = decide(H200, 0.5, may_start_mps=False)
    assert green.means is Means.MPS_GREEN
    failed = after_worker_start(green, green_contexts_failed=True)
    assert (failed.means, failed.why, failed.corun) == (Means.SERIAL, Why.GREEN_FAILED, False)
    assert after_worker_start(green, green_contexts_failed=False) == green
    # Other means never asked for green contexts: a worker's report changes nothing.
    fixed = MeansChoice(Means.MPS_FIXED, Why.FIXED)
    assert after_worker_start(fixed, green_contexts_failed=True) == fixed
