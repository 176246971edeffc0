import numpy as np
import pytest

from harli_sgl.tools import server_ttft as T

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
    assert T.server_args()[:2] == ["--enable-metrics", "--bucket-time-to-first-token"]
