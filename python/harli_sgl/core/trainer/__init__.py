"""The engine-agnostic layer-chunked LoRA trainer (torch, transformers and peft only).

``data`` turns JSONL records into masked token ids, ``stack`` opens an HF causal
LM up into per-layer calls, ``chunked`` runs one optimizer step as budgeted
layer pieces, and ``job_trainer`` drives a whole job (schedule, events,
checkpoints) on top. Nothing here imports sglang or zmq.
"""
