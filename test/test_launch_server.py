"""What the launcher serves when no model is named, and that a named model wins."""

from __future__ import annotations

from harli_sgl import launch_server
from harli_sgl.model import byte_model, smollm2


def test_without_a_model_path_it_serves_smollm2_under_its_short_name(smollm2_dir, tmp_path):
    server_args, _ = launch_server.prepare(["--harli-workdir", str(tmp_path)])
    assert server_args.model_path == smollm2_dir
    assert server_args.served_model_name == smollm2.SERVED_NAME == "SmolLM2-135M-Instruct"
    assert server_args.chat_template is None  # the tokenizer's own (SmolLM2's ChatML)


def test_a_given_model_path_and_name_win(tmp_path):
    server_args, _ = launch_server.prepare(["--harli-workdir", str(tmp_path),
                                            *byte_model.server_flags("tiny")])
    assert server_args.model_path == byte_model.ensure("tiny")
    assert server_args.served_model_name == "byte-llama-tiny-random"
