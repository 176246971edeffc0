import pytest

from harli_sgl.core.gpu.precision import Precision, autocast_for, decide


def test_cpu_and_serving_only_leave_sglang_alone():
    assert decide(False, True, None, False) == Precision(None, None)
    assert decide(True, False, "float16", True) == Precision(None, None)


def test_a_gpu_that_finetunes_serves_bf16_with_fp32_lora_and_bf16_autocast():
    for flag in (None, "auto"):
        p = decide(True, True, flag, bf16=True)
        assert (p.serve_dtype, p.autocast_dtype, p.lora_dtype, p.refused) == \
            ("bfloat16", "bfloat16", "float32", None)


def test_an_operators_bf16_or_fp32_is_kept():
    assert decide(True, True, "bfloat16", True) == Precision(None, "bfloat16")
    assert decide(True, True, "float32", False) == Precision(None, None)


def test_fp16_training_is_refused_never_run_without_a_loss_scaler():
    for flag in ("float16", "half"):
        p = decide(True, True, flag, bf16=True)
        assert p.refused is not None and "loss scaler" in p.refused
    old_gpu = decide(True, True, None, bf16=False)
    assert old_gpu.refused is not None and "--dtype float32" in old_gpu.refused


def test_the_workers_autocast_follows_the_weights_it_maps():
    assert autocast_for(False, "bfloat16") is None
    assert autocast_for(True, "float32") is None
    assert autocast_for(True, "bfloat16") == "bfloat16"
    with pytest.raises(ValueError, match="loss scaler"):
        autocast_for(True, "float16")
