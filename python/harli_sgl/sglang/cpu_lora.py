"""LoRA serving on a host without an accelerator: make SGLang's LoRA path pin-free.

What breaks
-----------
SGLang 0.5.23 stages LoRA metadata in *pinned* (page-locked) host memory so that
host-to-device copies can be asynchronous. Pinning is a service of the
accelerator's driver, and on a host without one the CUDA build of torch raises
"Found no NVIDIA driver on your system" on the first pinned allocation. With
``--device cpu --enable-lora --lora-backend torch_native`` these unconditional
pins are on the serving path (line numbers are for the installed 0.5.23):

* ``srt/lora/layers.py`` -- when ``LoRAManager.init_lora_modules`` wraps the
  model's layers: ``torch.tensor(..., pin_memory=True)`` for ``output_offset_cpu``
  in ``VocabParallelEmbeddingWithLoRA.__init__`` (l.145),
  ``ParallelLMHeadWithLoRA.__init__`` (l.324), ``ColumnParallelLinearWithLoRA.__init__``
  (l.479; also the base of the QKV wrapper) and ``QKVParallelLinearWithLoRA.__init__``
  (l.723). Start-up dies at l.479.
* ``srt/lora/layers.py`` -- when ``LoRAManager.update_lora_info`` binds the pool
  buffers: ``MergedColumnParallelLinearWithLoRA.set_lora_info`` (l.594,
  ``.cpu().pin_memory()``, gate_up_proj) and ``RowParallelLinearWithLoRA.set_lora_info``
  (l.814, o_proj / down_proj).
* ``srt/lora/backend/torch_backend.py`` ``TorchNativeLoRABackend.prepare_lora_batch``
  (l.225-244: four ``.pin_memory()`` and three ``pin_memory=True``) -- every forward
  batch, with or without an adapter, so the first request would die.
* ``srt/lora/lora.py:530 LoRAAdapter.pin_weights_in_cpu`` pins adapter weights;
  it has no caller in 0.5.23 and is covered so that a future caller cannot bring
  the crash back.

Everything else on the path is already CPU-clean: ``LoRAMemoryPool`` only pins
when ``is_pin_memory_available()`` says so, and ``CpuSRTPlatform`` says no
(``mem_pool.py:163,758``); the ``non_blocking=True`` copies are plain copies
between CPU tensors; the torch_native kernels (``lora/torch_ops``) are pure torch;
loading from disk and ``load_lora_adapter_from_tensors`` allocate ordinary tensors.
Overlap loading (``--enable-lora-overlap-loading``) exists to hide H2D copies
behind compute and is pointless without a device; it is not covered here.

Why dropping the pin is correct
-------------------------------
A pinned tensor holds the same values as an unpinned one; pinning only lets a
DMA engine read it asynchronously. Without an accelerator there is no DMA engine
and every "device" tensor is a CPU tensor, so the copies that read these buffers
are CPU-to-CPU and synchronous either way. SGLang's own platform layer reaches the
same verdict (``CpuSRTPlatform.is_pin_memory_available() -> False``); the sites
above just never ask it.

How it is scoped
----------------
``apply()`` patches no torch function. It wraps the SGLang functions that pin so
that they run under :class:`PinFreeMode`, a ``TorchFunctionMode`` that drops
``pin_memory=True`` from factory calls and makes ``Tensor.pin_memory()`` return its
tensor. (Rebinding the module-level ``torch`` name of those modules to a pin-free
facade would catch the factory calls but not the ``Tensor.pin_memory()`` method
calls in torch_backend.py, layers.py l.594 and lora.py, hence a mode.) What runs under it:

* the ``torch_native`` entry of SGLang's LoRA backend registry
  (``lora/backend/lora_registry.py``) now yields a subclass whose
  ``prepare_lora_batch`` runs under the mode;
* ``LoRAManager.init_lora_modules`` and ``LoRAManager.update_lora_info`` (the only
  callers of the layer constructors and ``set_lora_info``) run under it;
* ``LoRAAdapter.pin_weights_in_cpu`` runs under it.

Torch function modes are thread-local, so torch calls anywhere else in the
process -- the model forward, the KV cache, the scheduler, other threads -- never
see it. The per-batch cost is the mode's dispatch over the 35 small torch calls
of ``prepare_lora_batch``: about 0.1 ms per forward on a 2-core CPU, against a
decode iteration of ~15 ms for the default model.

``apply()`` is idempotent and does nothing when an accelerator is available
(then pinning works and stays), unless ``HARLI_FORCE_CPU`` asks for the CPU
recipe. Call it in the scheduler process before the model runner creates the
``LoRAManager`` (e.g. first thing in a ``run_scheduler_process_func``).
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode

from harli_sgl import env

_applied = False
_lock = threading.Lock()
# Set on every wrapper we install, so a second apply() (or a re-imported copy of
# this module) recognises its own work and never wraps twice.
_MARK = "__harli_pin_free__"


class PinFreeMode(TorchFunctionMode):
    """Within this mode, host tensors are allocated unpinned.

    ``pin_memory=True`` on a factory call becomes ``False`` and
    ``Tensor.pin_memory()`` returns the tensor unchanged; every other call passes
    through untouched.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.pin_memory:
            return args[0]
        if kwargs and kwargs.get("pin_memory"):
            kwargs = {**kwargs, "pin_memory": False}
        return func(*args, **(kwargs or {}))


def pin_free(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``fn`` so that it (and whatever it calls) runs under :class:`PinFreeMode`."""
    if getattr(fn, _MARK, False):
        return fn

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with PinFreeMode():
            return fn(*args, **kwargs)

    setattr(wrapper, _MARK, True)
    return wrapper


def needed() -> bool:
    """True when pinning cannot work here, i.e. there is no accelerator.

    ``torch.accelerator`` rather than ``torch.cuda``: ``Tensor.pin_memory()`` pins
    for whatever accelerator torch has, so that is the question to ask.
    ``HARLI_FORCE_CPU`` forces the CPU recipe for tests of the CPU path.
    """
    return env.FORCE_CPU.get() or not torch.accelerator.is_available()


@functools.cache
def pin_free_torch_native_backend() -> type:
    """The ``torch_native`` LoRA backend with its per-batch staging left unpinned.

    Built on first use (like SGLang's own registry factories) so importing this
    module does not import SGLang's LoRA stack.
    """
    from sglang.srt.lora.backend.torch_backend import TorchNativeLoRABackend

    class PinFreeTorchNativeLoRABackend(TorchNativeLoRABackend):
        # Registered under the stock name: the backend SGLang reports and the
        # flag users pass stay "torch_native".
        prepare_lora_batch = pin_free(TorchNativeLoRABackend.prepare_lora_batch)
        # SGLang's own backend switch: batches that use no adapter take the plain
        # model path. Without it every LoRA-wrapped linear runs torch_native's Python
        # loops at rank 0, which made decode ~20% slower with no adapter in use
        # (measured; docs/benchmarks.md). It is only unsafe with CUDA graphs, which
        # do not exist on this path (no accelerator).
        skip_inactive_lora_batches = True

    return PinFreeTorchNativeLoRABackend


def apply() -> None:
    """Make ``--enable-lora --lora-backend torch_native`` work without an accelerator.

    Idempotent; a no-op when an accelerator is available. Must run in the
    scheduler process before ``ModelRunner`` builds its ``LoRAManager``.
    """
    global _applied
    with _lock:
        if _applied or not needed():
            return
        from sglang.srt.lora.backend.lora_registry import register_lora_backend
        from sglang.srt.lora.lora import LoRAAdapter
        from sglang.srt.lora.lora_manager import LoRAManager

        # The registry stores factories resolved at LoRAManager construction
        # (get_backend_from_name), so replacing the entry is enough.
        register_lora_backend("torch_native")(pin_free_torch_native_backend)
        # Layer wrappers pin in __init__ and set_lora_info; these two methods are
        # their only callers, so scoping them covers every layer type.
        LoRAManager.init_lora_modules = pin_free(LoRAManager.init_lora_modules)
        LoRAManager.update_lora_info = pin_free(LoRAManager.update_lora_info)
        LoRAAdapter.pin_weights_in_cpu = pin_free(LoRAAdapter.pin_weights_in_cpu)
        _applied = True
