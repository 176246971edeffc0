from harli_sgl.core.gpu.corun_means import Means
from harli_sgl.core.gpu.share import Purpose, ShareChoice, corun_share, green_steps, share_for

H200_SMS = 132


def test_green_steps_round_down_to_the_split_granularity():
    steps = green_steps(0.4, H200_SMS)
    assert [s.num_sms for s in steps] == [32, 48, 64, 96]  # 33->32, 52.8->48, 66->64, 99->96
    assert all(s.share == s.num_sms / H200_SMS for s in steps)
    assert green_steps(0.5, 8) == ()  # too few SMs to split


def test_a_corun_gets_the_largest_step_not_above_the_modelled_share():
    got = share_for(Means.MPS_GREEN, Purpose.CORUN, 0.5, 0.5, H200_SMS)
    assert got == ShareChoice(64 / H200_SMS, 64) and got.share <= 0.5
    assert share_for(Means.MPS_GREEN, Purpose.CORUN, 0.3, 0.5, H200_SMS).num_sms == 32
    assert share_for(Means.MPS_GREEN, Purpose.CORUN, 0.1, 0.5, H200_SMS) == ShareChoice(0.0, 0)


def test_top_ups_serial_slots_and_idle_get_the_whole_device_under_green_contexts():
    for purpose in (Purpose.TOPUP, Purpose.SERIAL, Purpose.IDLE):
        assert share_for(Means.MPS_GREEN, purpose, 0.5, 0.5, H200_SMS) == ShareChoice(1.0, 0)
    assert share_for(Means.MPS_GREEN, Purpose.CORUN, 1.0, 0.5, H200_SMS) == ShareChoice(1.0, 0)


def test_a_fixed_mps_share_is_the_same_for_everything_and_says_so():
    for purpose in Purpose:
        assert share_for(Means.MPS_FIXED, purpose, 1.0, 0.5) == ShareChoice(0.5, 0)


def test_serial_means_never_co_runs_but_serial_slots_have_the_device():
    assert share_for(Means.SERIAL, Purpose.CORUN, 0.5, 0.5) == ShareChoice(0.0, 0)
    assert share_for(Means.SERIAL, Purpose.IDLE, 1.0, 0.5) == ShareChoice(0.0, 0)
    assert share_for(Means.SERIAL, Purpose.SERIAL, 0.5, 0.5) == ShareChoice(1.0, 0)
    assert share_for(Means.SERIAL, Purpose.TOPUP, 0.5, 0.5) == ShareChoice(1.0, 0)
    assert corun_share(Means.SERIAL, 0.5) == 0.0
    assert corun_share(Means.MPS_FIXED, 0.5) == 0.5
    assert corun_share(Means.MPS_GREEN, 0.5, H200_SMS) == 64 / H200_SMS
