import numpy as np
import pytest

from harli_sgl.tools import server_latency as T

EXPOSITION = """# HELP sglang:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE sglang:time_to_first_token_seconds histogram
sglang:time_to_first_token_seconds_bucket{le="0.1",model_name="m",stream="true"} 2.0
sglang:time_to_first_token_seconds_bucket{le="0.2",model_name="m",stream="true"} 6.0
sglang:time_to_first_token_seconds_bucket{le="+Inf",model_name="m",stream="true"} 8.0
sglang:time_to_first_token_seconds_bucket{le="0.1",model_name="m",stream="false"} 0.0
sglang:time_to_first_token_seconds_bucket{le="0.2",model_name="m",stream="false"} 2.0
sglang:time_to_first_token_seconds_bucket{le="+Inf",model_name="m",stream="false"} 2.0
sglang:time_to_first_token_seconds_count{model_name="m",stream="true"} 8.0
sglang:inter_token_latency_seconds_bucket{le="0.1",model_name="m"} 99.0
"""


def test_buckets_are_summed_over_label_sets_and_other_metrics_ignored():
    assert T.parse_buckets(EXPOSITION) == {0.1: 2.0, 0.2: 8.0, float("inf"): 10.0}


def test_a_runs_quantiles_come_from_the_difference_of_two_reads():
    before = {0.1: 2.0, 0.2: 8.0, float("inf"): 10.0}
    after = {0.1: 2.0, 0.2: 12.0, float("inf"): 10.0 + 4.0}  # 4 new, all in (0.1, 0.2]
    run = T.difference(after, before)
    assert run == {0.1: 0.0, 0.2: 4.0, float("inf"): 4.0}
    assert T.quantile(run, 0.5) == pytest.approx(0.15)
    assert T.quantile(run, 0.0) == pytest.approx(0.1)
    assert T.quantile({0.1: 0.0, float("inf"): 0.0}, 0.5) is None


def test_quantiles_of_real_samples_are_within_one_bucket():
    rng = np.random.default_rng(0)
    samples = rng.lognormal(np.log(0.25), 0.8, size=400)
    buckets = {b: float(np.sum(samples <= b)) for b in T.TTFT_BUCKETS_S}
    buckets[float("inf")] = float(len(samples))
    for q in (0.5, 0.9, 0.99):
        true = float(np.quantile(samples, q))
        step = min(b for b in T.TTFT_BUCKETS_S if b >= true) - max(
            [0.0] + [b for b in T.TTFT_BUCKETS_S if b < true])
        assert abs(T.quantile(buckets, q) - true) <= step


def test_the_buckets_reach_past_the_longest_ttft_a_benchmark_sees():
    assert list(T.TTFT_BUCKETS_S) == sorted(set(T.TTFT_BUCKETS_S))
    assert T.TTFT_BUCKETS_S[0] == 0.01 and T.TTFT_BUCKETS_S[-1] >= 30
    args = T.server_args()
    assert args[:2] == ["--enable-metrics", "--bucket-time-to-first-token"]
    assert args[args.index("--bucket-inter-token-latency") + 1:] == list(map(str, T.TPOT_BUCKETS_S))


TPOT_EXPOSITION = """sglang:request_time_per_output_token_seconds_bucket{le="0.05",is_streaming="true"} 3.0
sglang:request_time_per_output_token_seconds_bucket{le="0.1",is_streaming="true"} 7.0
sglang:request_time_per_output_token_seconds_bucket{le="+Inf",is_streaming="true"} 8.0
sglang:request_time_per_output_token_seconds_bucket{le="0.1",is_streaming="false"} 1.0
sglang:request_time_per_output_token_seconds_bucket{le="+Inf",is_streaming="false"} 2.0
sglang:time_to_first_token_seconds_bucket{le="0.1",is_streaming="true"} 50.0
"""


def test_tpot_is_read_from_its_own_histogram_and_attainment_is_exact_at_a_bucket_edge():
    tpot = T.parse_buckets(TPOT_EXPOSITION, T.TPOT)
    assert tpot == {0.05: 3.0, 0.1: 8.0, float("inf"): 10.0}
    assert T.count(tpot) == 10
    assert T.fraction_within(tpot, 0.1) == pytest.approx(0.8)
    with pytest.raises(ValueError):
        T.fraction_within(tpot, 0.075)  # inside a bucket: refused, never interpolated
    assert T.fraction_within({float("inf"): 0.0}, 0.1) is None


def test_every_whole_millisecond_slo_to_400_ms_is_a_tpot_bucket_edge():
    assert list(T.TPOT_BUCKETS_S) == sorted(set(T.TPOT_BUCKETS_S))
    edges = {round(b * 1000) for b in T.TPOT_BUCKETS_S if b <= 0.4}
    assert edges == set(range(1, 401))
    buckets = {b: 1.0 for b in T.TPOT_BUCKETS_S} | {float("inf"): 1.0}
    for ms in (1, 50, 100, 150, 237, 400):
        assert T.fraction_within(buckets, ms / 1000) == 1.0


def test_a_runs_summary_is_the_difference_of_two_scrapes_in_ms():
    before = {"ttft": {0.1: 1.0, float("inf"): 1.0}, "tpot": {0.05: 2.0, 0.1: 2.0, float("inf"): 2.0}}
    after = {"ttft": {0.1: 3.0, float("inf"): 3.0},
             "tpot": {0.05: 2.0, 0.1: 5.0, float("inf"): 6.0}}  # 4 new: 3 in (50, 100] ms, 1 above
    s = T.summary(before, after, tpot_slo_ms=100)
    assert s["server_requests"] == 4
    assert s["slo_attainment"] == pytest.approx(0.75)
    assert s["tpot_p50_ms"] == pytest.approx(50 + 50 * (2 / 3))
    assert s["ttft_p50_ms"] == pytest.approx(50.0)
