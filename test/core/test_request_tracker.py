from __future__ import annotations

from harli_sgl.core.request_tracker import RequestTracker


def test_tpot_is_measured_like_bench_serving():
    done = []
    t = RequestTracker(on_finished=lambda tpot, work: done.append(tpot))
    t.update("a", 1, now=10.0, finished=False)   # first token (end of prefill)
    t.update("a", 2, now=10.05, finished=False)
    t.update("a", 3, now=10.15, finished=False)
    t.update("a", 4, now=10.30, finished=True)
    assert len(done) == 1 and abs(done[0] - 100.0) < 1e-6  # 300 ms over 3 tokens
    assert len(t) == 0


def test_slack_is_the_tightest_running_deadline():
    t = RequestTracker()
    assert t.slack_ms(0.0, 100.0) is None
    t.update("fast", 1, now=0.0, finished=False)
    t.update("fast", 5, now=0.2, finished=False)     # 4 tokens in 200 ms: ahead of a 100 ms pace
    t.update("spiked", 1, now=0.0, finished=False)
    t.update("spiked", 2, now=0.25, finished=False)  # one 250 ms gap (a prefill stall)
    # fast's next token is due at 0.5 s, spiked's at 0.2 s, already past at 0.25 s.
    assert abs(t.slack_ms(0.25, 100.0) - (-50.0)) < 1e-6
    assert sorted(round(x) for x in t.running_tpots_ms()) == [50, 250]


def test_requests_without_a_second_token_report_nothing():
    done = []
    t = RequestTracker(on_finished=lambda tpot, work: done.append(tpot))
    t.update("one", 1, now=1.0, finished=True)
    assert done == []


def test_a_requests_work_per_token_is_what_work_added_between_its_first_token_and_its_last():
    finished = []  # (rid, work ms per token), in the order requests finish
    t = RequestTracker(on_finished=lambda tpot, work: finished.append(work))
    t.note_work(50.0)  # before either request: neither's
    t.update("alone", 1, now=0.0, finished=False)
    t.update("beside", 1, now=0.0, finished=False)
    t.update("alone", 3, now=0.2, finished=True)
    t.note_work(30.0)  # after "alone" finished, while "beside" still runs
    t.note_work(-5.0)  # an iteration faster than predicted: work never *saves* time
    t.update("beside", 4, now=0.4, finished=True)
    assert finished == [0.0, 10.0]  # alone; beside: 30 ms over its 3 tokens after the first
