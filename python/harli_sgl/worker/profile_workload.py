"""A synthetic training workload for the start-up latency profile.

The co-run latency model must be fitted before any customer job exists, so
during the profile the scheduler grants *synthetic* slots, and the worker runs
them on this: a LoRA job over random token sequences with the shape of a
typical micro-batch (4 sequences of 64 tokens), on the same shared base
weights, through the same layer-chunked trainer. Its pieces cost what real
pieces cost; its results are thrown away.
"""

from __future__ import annotations

import torch

from harli_sgl.core.shared_weights import build_model
from harli_sgl.core.trainer.config import TrainConfig
from harli_sgl.core.trainer.data import Example
from harli_sgl.core.trainer.job_trainer import JobTrainer

SEQUENCES, SEQ_LEN = 4, 64


class ProfileWorkload:
    def __init__(self, hf_config, fused: dict[str, torch.Tensor], tokenizer, target_modules):
        self.hf_config, self.fused, self.tokenizer = hf_config, fused, tokenizer
        self.target_modules = tuple(target_modules)
        g = torch.Generator().manual_seed(0)
        vocab = min(hf_config.vocab_size, len(tokenizer))
        ids = torch.randint(0, vocab, (SEQUENCES, SEQ_LEN), generator=g).tolist()
        self.examples = [Example(row, row) for row in ids]
        self.trainer = self._new_trainer()

    def _new_trainer(self) -> JobTrainer:
        cfg = TrainConfig(n_epochs=50, batch_size=SEQUENCES, micro_batch_size=SEQUENCES,
                          learning_rate=1e-4, lora_r=8, lora_alpha=16,
                          target_modules=self.target_modules, seed=0, max_seq_len=SEQ_LEN)
        return JobTrainer(build_model(self.hf_config, self.fused), self.tokenizer, self.examples, cfg)

    def run(self, budget_units: int, deadline: float):
        self._renew_if_done()
        return self.trainer.run(budget_units, deadline)

    def next_piece_units(self) -> int:
        self._renew_if_done()
        return self.trainer.min_piece_units

    def _renew_if_done(self) -> None:
        if self.trainer.done:
            self.trainer.close()
            self.trainer = self._new_trainer()

    def close(self) -> None:
        self.trainer.close()
