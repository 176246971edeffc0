"""harli_sgl.sglang.cpu_lora: SGLang's torch_native LoRA path runs without an accelerator.

The checks that touch SGLang run in one fresh interpreter (this file run as a
script, ``python test_cpu_lora.py <check>...``, once for the module) because SGLang must see
``SGLANG_USE_CPU_ENGINE=1`` and the driver stand-in before it is imported, and
because ``apply()`` and SGLang's parallel runtime are process-wide. Each of them
fails with "Found no NVIDIA driver" on a CPU host when ``apply()`` is skipped.
What needs a server (hot-loading PEFT adapters, logprob parity with HF+PEFT) is
left to the end-to-end tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

HERE = os.path.abspath(__file__)


# Run in order in one child: apply_idempotent must see stock SGLang, before any apply().
CHILD_CHECKS = ("apply_idempotent", "backend", "layers")


@pytest.fixture(scope="module")
def child() -> subprocess.CompletedProcess:
    """One fresh interpreter runs every SGLang check (importing SGLang costs ~20 s)."""
    from harli_sgl.platform import cuda_stub

    environment = dict(os.environ, SGLANG_USE_CPU_ENGINE="1", HARLI_FORCE_CPU="1",
                       TOKENIZERS_PARALLELISM="false")
    stub = cuda_stub.ensure()
    if stub is not None:
        environment["LD_LIBRARY_PATH"] = ":".join(
            p for p in (stub, environment.get("LD_LIBRARY_PATH", "")) if p)
    return subprocess.run([sys.executable, HERE, *CHILD_CHECKS], env=environment,
                          capture_output=True, text=True, timeout=600)


def _assert_check(proc: subprocess.CompletedProcess, name: str) -> None:
    assert f"OK {name}" in proc.stdout.splitlines(), (
        f"check {name} failed (rc={proc.returncode})\n--- stdout\n{proc.stdout[-5000:]}"
        f"\n--- stderr\n{proc.stderr[-10000:]}")


def test_pin_free_mode_drops_only_pinning():
    check_mode()


@pytest.mark.timeout(600)
def test_apply_is_idempotent_and_replaces_only_torch_native(child):
    _assert_check(child, "apply_idempotent")


@pytest.mark.timeout(600)
def test_backend_prepares_and_applies_a_mixed_batch(child):
    _assert_check(child, "backend")


@pytest.mark.timeout(600)
def test_lora_manager_wraps_real_layers_and_runs_forward(child):
    _assert_check(child, "layers")


# ---------------------------------------------------------------------------
# Checks (all but check_mode run in a child interpreter)
# ---------------------------------------------------------------------------

def check_mode() -> None:
    """PinFreeMode drops exactly the pinning, and only while it is active."""
    import torch

    from harli_sgl.sglang.cpu_lora import PinFreeMode, pin_free

    @pin_free
    def staged():
        a = torch.tensor([1, 2], dtype=torch.int32, pin_memory=True, device="cpu")
        b = torch.zeros((3,), dtype=torch.int32, pin_memory=True)
        c = torch.empty(2, pin_memory=True)
        d = a.cpu().pin_memory()
        e = torch.ones_like(a).pin_memory()
        return a, b, c, d, e

    a, b, c, d, e = staged()
    assert all(not t.is_pinned() for t in (a, b, c, d, e))
    assert a.tolist() == [1, 2] and b.tolist() == [0, 0, 0] and e.tolist() == [1, 1]
    assert d is a  # pin_memory() hands back the very tensor, like it does for a pinned one
    assert pin_free(staged) is staged  # never wrapped twice

    # Outside the mode nothing changed: without an accelerator pinning still fails.
    if not torch.accelerator.is_available():
        for pin in (lambda: torch.zeros(1, pin_memory=True), lambda: torch.zeros(1).pin_memory()):
            try:
                pin()
            except RuntimeError:
                pass
            else:
                raise AssertionError("pinning outside PinFreeMode should still fail on this host")
    with PinFreeMode():
        assert not torch.tensor([0], pin_memory=True).is_pinned()


def check_apply_idempotent() -> None:
    from sglang.srt.lora.backend.lora_registry import get_backend_from_name
    from sglang.srt.lora.backend.torch_backend import TorchNativeLoRABackend
    from sglang.srt.lora.lora import LoRAAdapter
    from sglang.srt.lora.lora_manager import LoRAManager

    from harli_sgl.sglang import cpu_lora

    stock_init = LoRAManager.init_lora_modules
    assert get_backend_from_name("torch_native") is TorchNativeLoRABackend
    cpu_lora.apply()
    wrapped = (LoRAManager.init_lora_modules, LoRAManager.update_lora_info,
               LoRAAdapter.pin_weights_in_cpu)
    backend = get_backend_from_name("torch_native")
    cpu_lora.apply()
    assert (LoRAManager.init_lora_modules, LoRAManager.update_lora_info,
            LoRAAdapter.pin_weights_in_cpu) == wrapped
    assert LoRAManager.init_lora_modules.__wrapped__ is stock_init
    assert get_backend_from_name("torch_native") is backend
    assert issubclass(backend, TorchNativeLoRABackend) and backend.name == "torch_native"
    # Other backends are untouched.
    from sglang.srt.lora.backend.chunked_backend import ChunkedSgmvLoRABackend
    assert get_backend_from_name("csgmv") is ChunkedSgmvLoRABackend


def _extend_batch(seq_lens: list[int]):
    """The fields of ForwardBatch that LoRA batch preparation reads, for an extend batch."""
    from types import SimpleNamespace

    import torch
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    return SimpleNamespace(forward_mode=ForwardMode.EXTEND, batch_size=len(seq_lens),
                           extend_seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
                           extend_seq_lens_cpu=list(seq_lens))


def check_backend() -> None:
    """The registered torch_native backend prepares a mixed batch and applies LoRA on CPU.

    Requests 0 and 2 use adapters in slots 1 and 2 (ranks 4 and 8), request 1 the base
    model (slot 0, rank 0); the result must be base + scaling * x A^T B^T per request.
    """
    import torch
    from sglang.srt.lora.backend.lora_registry import get_backend_from_name

    from harli_sgl.sglang import cpu_lora

    cpu_lora.apply()
    torch.manual_seed(0)
    backend = get_backend_from_name("torch_native")(max_loras_per_batch=3, device=torch.device("cpu"))
    seq_lens, slots = [3, 2, 4], [1, 0, 2]
    ranks, scalings = [0, 4, 8], [0.0, 2.0, 0.5]
    backend.prepare_lora_batch(_extend_batch(seq_lens), weight_indices=slots, lora_ranks=ranks,
                               scalings=scalings, use_cuda_graph=False)
    info = backend.batch_info
    for t in (info.seg_lens_cpu, info.seg_indptr_cpu, info.weight_indices_cpu,
              info.lora_ranks_cpu, info.scalings_cpu):
        assert t.device.type == "cpu" and not t.is_pinned()
    assert info.seg_indptr_cpu.tolist() == [0, 3, 5, 9]

    n, d_in, d_out, max_rank = sum(seq_lens), 16, 12, 8
    x = torch.randn(n, d_in)
    a = torch.randn(3, max_rank, d_in)   # pool layout: (slot, rank, in)
    b = torch.randn(3, d_out, max_rank)  # pool layout: (slot, out, rank)
    base = torch.randn(n, d_out)
    out = backend.run_lora_b_sgemm(backend.run_lora_a_sgemm(x, a), b,
                                   output_offset_cpu=torch.tensor([0, d_out], dtype=torch.int32),
                                   base_output=base.clone())
    expected, start = base.clone(), 0
    for length, slot in zip(seq_lens, slots):
        r = ranks[slot]
        if r:
            rows = slice(start, start + length)
            expected[rows] += scalings[slot] * x[rows] @ a[slot, :r].T @ b[slot, :, :r].T
        start += length
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def _init_sglang_runtime() -> None:
    """Publish ServerArgs and build SGLang's (single-rank, gloo) parallel groups, as a scheduler does."""
    from sglang.srt.distributed.bootstrap import init_parallel_runtime
    from sglang.srt.runtime_context import SpawnRanks, publish
    from sglang.srt.server_args import prepare_server_args

    from harli_sgl.model import byte_model

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server_args = prepare_server_args([
        "--model-path", byte_model.ensure("tiny"), "--device", "cpu",
        "--attention-backend", "torch_native", "--disable-cuda-graph", "--dtype", "float32",
        "--enable-lora", "--lora-backend", "torch_native", "--max-lora-rank", "8",
        "--lora-target-modules", "all", "--max-total-tokens", "1024"])
    publish(server_args, role="scheduler", ranks=SpawnRanks(world_rank=0, gpu_id=0))
    init_parallel_runtime(server_args=server_args, device="cpu", dist_port=port)


def check_layers() -> None:
    """LoRAManager wraps real SGLang layers, binds pool buffers and runs forward on CPU.

    ``LoRAManager.init_lora_modules`` and ``update_lora_info`` (as patched by
    apply()) run unmodified against a one-layer model of real SGLang parallel
    linears; only the manager's state and the memory pool are stand-ins. These
    are the calls that pinned in layers.py (l.479, 594, 723, 814).
    """
    from types import SimpleNamespace

    import torch
    from sglang.srt.layers.linear import (
        MergedColumnParallelLinear,
        QKVParallelLinear,
        RowParallelLinear,
    )
    from sglang.srt.lora.backend.lora_registry import get_backend_from_name
    from sglang.srt.lora.lora_manager import LoRAManager
    from sglang.srt.lora.utils import LoRAType

    from harli_sgl.sglang import cpu_lora

    _init_sglang_runtime()
    cpu_lora.apply()
    torch.manual_seed(0)
    hidden, head_dim, heads, kv_heads, inter, rank = 64, 16, 4, 2, 96, 4
    q, kv = heads * head_dim, kv_heads * head_dim
    layer = torch.nn.Module()
    layer.self_attn = torch.nn.Module()
    layer.mlp = torch.nn.Module()
    layer.self_attn.qkv_proj = QKVParallelLinear(hidden, head_dim, heads, kv_heads, bias=False)
    layer.self_attn.o_proj = RowParallelLinear(q, hidden, bias=False)
    layer.mlp.gate_up_proj = MergedColumnParallelLinear(hidden, [inter, inter], bias=False)
    layer.mlp.down_proj = RowParallelLinear(inter, hidden, bias=False)
    model = torch.nn.Module()
    model.model = torch.nn.Module()
    model.model.layers = torch.nn.ModuleList([layer])
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    bases = {name: getattr(getattr(layer, part), name) for part, name in
             (("self_attn", "qkv_proj"), ("self_attn", "o_proj"), ("mlp", "gate_up_proj"),
              ("mlp", "down_proj"))}

    # Pool buffers in LoRAMemoryPool's layout: slot 0 = base model (rank 0), slot 1 = adapter.
    shapes = {"qkv_proj": ((2, 3 * rank, hidden), (2, q + 2 * kv, rank)),
              "o_proj": ((2, rank, q), (2, hidden, rank)),
              "gate_up_proj": ((2, 2 * rank, hidden), (2, 2 * inter, rank)),
              "down_proj": ((2, rank, inter), (2, hidden, rank))}
    buffers = {k: (torch.randn(*sa) * 0.1, torch.randn(*sb) * 0.1) for k, (sa, sb) in shapes.items()}
    pool = SimpleNamespace(
        target_modules=set(shapes),
        get_tensor=lambda target_module, layer_id, lora_type: buffers[target_module][
            0 if lora_type == LoRAType.LORA_A else 1])

    class Manager:  # just the state the two methods read; the methods are LoRAManager's own
        init_lora_modules = LoRAManager.init_lora_modules
        update_lora_info = LoRAManager.update_lora_info
        set_lora_module = LoRAManager.set_lora_module

    manager = Manager()
    manager.base_model, manager.memory_pool, manager.target_modules = model, pool, set(shapes)
    manager.base_hf_config = SimpleNamespace(num_hidden_layers=1)
    manager.lora_backend = backend = get_backend_from_name("torch_native")(
        max_loras_per_batch=2, device=torch.device("cpu"))
    manager.init_lora_modules()
    manager.update_lora_info()
    modules = {name.rsplit(".", 1)[1]: m for name, m in manager.lora_modules[0].items()}
    assert set(modules) == set(shapes)
    for module in modules.values():
        assert not module.output_offset_cpu.is_pinned()

    seq_lens, scaling = [3, 2], 2.0
    backend.prepare_lora_batch(_extend_batch(seq_lens), weight_indices=[1, 0], lora_ranks=[0, rank],
                               scalings=[0.0, scaling], use_cuda_graph=False)
    # LoRAManager.prepare_lora_batch marks whether any request uses an adapter; the
    # pin-free backend skips batches where none does, so mark it as the manager would.
    backend.batch_info.has_active_lora = True
    for k, module in modules.items():
        x = torch.randn(sum(seq_lens), module.base_layer.input_size)
        out, base = module(x), bases[k](x)
        out, base = (t[0] if isinstance(t, tuple) else t for t in (out, base))
        a, b = buffers[k]
        offsets = module.output_offset_cpu.tolist()
        expected, rows = base.clone(), slice(0, 3)  # request 0 uses the adapter
        for s in range(len(offsets) - 1):
            a_s, b_s = a[1, s * rank:(s + 1) * rank], b[1, offsets[s]:offsets[s + 1]]
            expected[rows, offsets[s]:offsets[s + 1]] += scaling * x[rows] @ a_s.T @ b_s.T
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
        assert torch.equal(out[3:], base[3:])  # request 1 uses the base model: untouched


if __name__ == "__main__":
    import traceback

    failed = False
    for check in sys.argv[1:]:  # each reports on its own; a failure does not hide the next
        try:
            globals()[f"check_{check}"]()
            print(f"OK {check}", flush=True)
        except Exception:
            traceback.print_exc()
            print(f"FAILED {check}", flush=True)
            failed = True
    sys.exit(1 if failed else 0)
