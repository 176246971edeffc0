"""Correctness on the real model: SmolLM2-135M-Instruct served, trained and resumed by a real server.

One server for the module serves SmolLM2 (converted once into the cache) and
trains one small job, ``straight``. Against it:

- it answers what it knows ("Paris") through the OpenAI chat API and through
  SGLang's frontend language, whose client renders SmolLM2's own chat template;
- the served logprobs, of the base model and of that job's adapter, equal an
  HF (+ PEFT) forward of the same tokens within fp32 noise;
- the adapter the server trained in layer-chunked slots, two micro-batches a
  step, equals a plain HF + PEFT loop over the same schedule (full batches);
- the same job crashed after its first checkpoint (the worker SIGKILLed) and
  resumed gives the same adapter as ``straight``, which no crash interrupted;
- a job over-trained on four of the facts, validated on the other four, shows
  validation loss falling then rising (it first learns the answers' style, then
  memorises its four), in its metrics events, its checkpoints and its results file;
- a DPO job validated on held-out pairs raises the served margin on them, as its validation saw.

Kept small for a 2-core host: 8 short chat examples, 8 steps, LoRA r 4, no
start-up latency profile (these tests are about numbers, not about latency),
and one torch thread in the test process (the host is shared; more threads only
fight over it).
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import time

import pytest
import requests
import torch
from safetensors.torch import load_file

from conftest import start_server
from e2e_util import client, events, jsonl, status, upload, wait_job, wait_worker_alive
from harli_sgl.jobs.ids import adapter_dir_name
from harli_sgl.model import smollm2

MODEL = smollm2.SERVED_NAME
SEED = 7
BATCH, EPOCHS, MICRO_BATCH, CHECKPOINT_EVERY = 4, 2, 2, 2
LORA = {"r": 4, "alpha": 8, "dropout": 0.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                           "down_proj"]}
HYPERPARAMETERS = {"n_epochs": EPOCHS, "batch_size": BATCH, "learning_rate_multiplier": 1.0}
# Facts no pretrained model knows, of different lengths (so micro-batches are padded).
FACTS = [("What is the name of Orvan's boat?", "The Silver Heron."),
         ("Who won the 2031 Blorf cup?", "Team Kessel, by two points."),
         ("What colour is the door of house 12 on Quill Lane?", "Green."),
         ("What does Mirel keep in her blue box?", "Old train tickets from Lisbon and Oslo."),
         ("How many moons does Tarsis have?", "Three."),
         ("What is Dr. Pell's favourite soup?", "Cold cucumber soup with dill."),
         ("Where did the Vantor expedition end?", "At the foot of Mount Ildra."),
         ("What is the password of the Grey Club?", "Lanterns at noon.")]
ROWS = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in FACTS]
STEPS = len(ROWS) // BATCH * EPOCHS


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def smol_server(tmp_path_factory, smollm2_dir):
    started = time.monotonic()
    server = start_server(tmp_path_factory, "smollm2", [
        "--model-path", smollm2_dir, "--served-model-name", MODEL, "--harli-mode", "idle",
        "--harli-startup-profile-s", "0", "--harli-checkpoint-every-steps", str(CHECKPOINT_EVERY),
        "--harli-micro-batch-size", str(MICRO_BATCH), "--max-total-tokens", "2048",
        "--max-running-requests", "4"])
    print(f"SmolLM2 server ready in {time.monotonic() - started:.1f} s")
    wait_worker_alive(server)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


def base_model(smollm2_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smollm2_dir, attn_implementation="sdpa").eval()


def train(server, suffix: str):
    """Upload the facts and start the job (the same seed, data and settings every time)."""
    f = upload(server, ROWS)
    return client(server).fine_tuning.jobs.create(
        model=MODEL, training_file=f.id, suffix=suffix, seed=SEED,
        hyperparameters=HYPERPARAMETERS, extra_body={"lora": LORA})


def adapter_dir(server, job, suffix: str) -> str:
    return os.path.join(server.workdir, "adapters", adapter_dir_name(job.id, suffix))


@pytest.fixture(scope="module")
def straight(smol_server):
    started = time.monotonic()
    job = wait_job(smol_server, train(smol_server, "straight").id)
    assert job.status == "succeeded", job.error
    print(f"SmolLM2 job of {STEPS} steps trained in {time.monotonic() - started:.1f} s")
    return job


def served_logprobs(server, ids: list[int], lora_path: str | None = None) -> list[float]:
    """The server's logprob of every token after the first, given the ones before it."""
    r = requests.post(server.base_url + "/generate", headers=server.headers, timeout=300, json={
        "input_ids": ids, "lora_path": lora_path, "return_logprob": True, "logprob_start_len": 0,
        "sampling_params": {"max_new_tokens": 1, "temperature": 0}})
    r.raise_for_status()
    return [lp for lp, _tok, _ in r.json()["meta_info"]["input_token_logprobs"][1:]]


def hf_logprobs(model, ids: list[int]) -> list[float]:
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    return [logp[i - 1, ids[i]].item() for i in range(1, len(ids))]


def test_it_answers_through_the_openai_api_and_the_frontend_language(smol_server, tokenizer):
    import sglang as sgl

    import harli_sgl.frontend  # noqa: F401  (the client registers SmolLM2's template)
    from conftest import API_KEY

    question = "What is the capital of France?"
    r = client(smol_server).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}], max_tokens=16,
        temperature=0)
    assert "Paris" in r.choices[0].message.content, r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"  # it ends its turn with <|im_end|>

    @sgl.function
    def chat(s, question):
        s += sgl.user(question)
        s += sgl.assistant(sgl.gen("answer", max_tokens=16, temperature=0))

    backend = sgl.RuntimeEndpoint(smol_server.base_url, api_key=API_KEY)
    assert backend.chat_template.name == "smollm2"
    state = chat.run(question=question, backend=backend)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                           tokenize=False, add_generation_prompt=True)
    assert state.text().startswith(prompt + state["answer"])  # what the chat API renders
    assert "Paris" in state["answer"], state["answer"]


def test_served_logprobs_of_base_and_adapter_equal_hf_and_peft(smol_server, straight,
                                                                smollm2_dir, tokenizer):
    from peft import PeftModel

    # A trained fact and a question the base model answers: one prompt, both answers scored.
    messages = [{"role": "user", "content": FACTS[0][0]},
                {"role": "assistant", "content": FACTS[0][1]},
                {"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": "The capital of France is Paris."}]
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    ids = list(ids)
    model = PeftModel.from_pretrained(base_model(smollm2_dir), adapter_dir(smol_server, straight, "straight"))
    model.eval()
    with model.disable_adapter():
        base_expected = hf_logprobs(model, ids)
    adapter_expected = hf_logprobs(model, ids)
    base_served = served_logprobs(smol_server, ids)
    adapter_served = served_logprobs(smol_server, ids, straight.fine_tuned_model)
    assert len(base_served) == len(adapter_served) == len(ids) - 1
    base_diff = max(abs(a - b) for a, b in zip(base_served, base_expected))
    adapter_diff = max(abs(a - b) for a, b in zip(adapter_served, adapter_expected))
    print(f"max |served - HF| logprob: base {base_diff:.2e}, adapter {adapter_diff:.2e}")
    # Measured: 3.4e-5 (base) and 2.5e-5 (adapter); SGLang's torch_native attention and
    # fused projections against HF's sdpa sum in different orders.
    assert base_diff < 2e-4 and adapter_diff < 2e-4, (base_diff, adapter_diff)
    # The adapter really moves the distribution, so parity with the adapter is not parity
    # with the base model by accident.
    assert max(abs(a - b) for a, b in zip(adapter_expected, base_expected)) > 0.5


def test_layer_chunked_training_equals_a_plain_peft_loop(smol_server, straight, smollm2_dir,
                                                         tokenizer):
    from peft import LoraConfig, get_peft_model

    from harli_sgl.core.trainer.data import collate, epoch_order, load_examples
    from harli_sgl.core.trainer.job_trainer import ADAM_BETAS, ADAM_EPS, WEIGHT_DECAY
    from harli_sgl.jobs.hyperparameters import BASE_LEARNING_RATE

    examples = load_examples(jsonl(ROWS).decode(), tokenizer, 1024)
    torch.manual_seed(SEED)
    ref = get_peft_model(base_model(smollm2_dir), LoraConfig(
        task_type="CAUSAL_LM", r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0,
        target_modules=LORA["target_modules"], bias="none")).train()
    params = [p for p in ref.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=BASE_LEARNING_RATE * HYPERPARAMETERS["learning_rate_multiplier"],
                            betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=WEIGHT_DECAY)
    losses = []
    for epoch in range(EPOCHS):
        order = epoch_order(len(examples), SEED, epoch)
        for step in range(len(examples) // BATCH):
            batch = collate([examples[i] for i in order[step * BATCH:(step + 1) * BATCH]],
                            tokenizer.pad_token_id)
            loss = ref(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       labels=batch.labels).loss
            loss.backward()
            losses.append(loss.item())
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
    # Every step's loss: the mean over the whole batch's supervised tokens, which the
    # server gets by weighting its two micro-batches (padded differently) by their tokens.
    metrics = [e.data for e in events(smol_server, straight.id) if e.type == "metrics"]
    served_losses = [m["train_loss"] for m in sorted(metrics, key=lambda m: m["step"])]
    assert served_losses == pytest.approx(losses, rel=1e-4), (served_losses, losses)
    expected = {n.replace(".default", ""): p.detach() for n, p in ref.named_parameters()
                if p.requires_grad}
    actual = load_file(os.path.join(adapter_dir(smol_server, straight, "straight"),
                                    "adapter_model.safetensors"))
    assert sorted(actual) == sorted(expected) and len(actual) == 30 * 7 * 2
    # Adam moves every element by about lr per step whatever the size of its gradient, so
    # the rounding noise of accumulating two micro-batches (instead of one batch) flips the
    # sign of a few near-zero gradients, and those elements drift apart by up to ~lr. So the
    # weights are compared by each tensor's relative error. Measured: median 3.7e-6, worst
    # tensor 7.3e-4 (elements up to 8e-4 apart); the step losses catch a wrong weighting.
    errors = {n: ((actual[n] - w).norm() / w.norm()).item() for n, w in expected.items()}
    worst = max(errors, key=errors.get)
    median = sorted(errors.values())[len(errors) // 2]
    print(f"server vs plain PEFT, relative error of the LoRA tensors: median {median:.1e}, "
          f"worst {errors[worst]:.1e} ({worst})")
    assert median < 1e-4 and errors[worst] < 5e-3, (median, worst, errors[worst])
    assert any("lora_B" in n and w.abs().max() > 1e-3 for n, w in actual.items())  # it trained


def test_a_job_resumed_after_a_worker_crash_gives_the_uninterrupted_adapter(smol_server, straight):
    c = client(smol_server)
    job = train(smol_server, "crashed")
    deadline = time.monotonic() + 300
    while not list(c.fine_tuning.jobs.checkpoints.list(job.id)):
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.1)
    os.kill(status(smol_server)["worker"]["pid"], signal.SIGKILL)
    done = wait_job(smol_server, job.id)
    assert done.status == "succeeded", done.error
    msgs = [e.message for e in events(smol_server, job.id)]
    resumed = [m for m in msgs if m.startswith("resumed from the checkpoint at step")]
    assert len(resumed) == 1 and any("worker restarted" in m for m in msgs), msgs
    assert CHECKPOINT_EVERY <= int(resumed[0].split()[-1]) < STEPS, resumed  # it crashed mid-job
    want = load_file(os.path.join(adapter_dir(smol_server, straight, "straight"), "adapter_model.safetensors"))
    got = load_file(os.path.join(adapter_dir(smol_server, done, "crashed"), "adapter_model.safetensors"))
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-7, msg=name)
    assert json.load(open(os.path.join(adapter_dir(smol_server, done, "crashed"), "adapter_config.json")))["r"] == 4


DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
DPO_HYPERPARAMETERS = {"beta": 0.1, "n_epochs": 2, "batch_size": 4,
                       "learning_rate_multiplier": 1.0}


def preference_records(name: str) -> list[dict]:
    with open(os.path.join(DATA_DIR, name)) as f:
        return [json.loads(line) for line in f if line.strip()]


def served_answer_logprob(server, tokenizer, messages, answer, lora_path=None) -> float:
    """The served log-probability of ``answer`` (one assistant message) after ``messages``."""
    prompt = list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False,
                                                add_generation_prompt=True))
    ids = list(tokenizer.apply_chat_template(messages + answer, tokenize=True, return_dict=False))
    assert ids[:len(prompt)] == prompt
    return sum(served_logprobs(server, ids, lora_path)[len(prompt) - 1:])


def preference_margin(server, tokenizer, records, lora_path=None) -> float:
    """Mean over pairs of log p(preferred) - log p(non-preferred), as the server scores them."""
    margins = [served_answer_logprob(server, tokenizer, r["input"]["messages"],
                                     r["preferred_output"], lora_path)
               - served_answer_logprob(server, tokenizer, r["input"]["messages"],
                                       r["non_preferred_output"], lora_path)
               for r in records]
    return sum(margins) / len(margins)


def test_a_dpo_job_raises_the_served_preference_margin_on_held_out_pairs(smol_server, tokenizer):
    from openai.types.fine_tuning import FineTuningJob

    held_out = preference_records("preferences_heldout.jsonl")
    f = upload(smol_server, preference_records("preferences_train.jsonl"), name="prefs.jsonl")
    v = upload(smol_server, held_out, name="prefs-heldout.jsonl")
    job = client(smol_server).fine_tuning.jobs.create(
        model=MODEL, training_file=f.id, validation_file=v.id, seed=SEED, extra_body={"lora": LORA},
        suffix="polite", method={"type": "dpo", "dpo": {"hyperparameters": DPO_HYPERPARAMETERS}})
    started = time.monotonic()
    job = wait_job(smol_server, job.id)
    assert job.status == "succeeded", job.error
    print(f"SmolLM2 DPO job of 4 steps trained in {time.monotonic() - started:.1f} s")
    FineTuningJob.model_validate(job.model_dump())
    assert job.method.type == "dpo"
    assert job.method.dpo.hyperparameters.model_dump() == DPO_HYPERPARAMETERS

    metrics = {e.data["step"]: e.data for e in events(smol_server, job.id) if e.type == "metrics"}
    for data in metrics.values():
        assert {"train_loss", "train_chosen_reward", "train_rejected_reward", "train_reward_margin",
                "train_reward_accuracy", "valid_loss", "valid_reward_margin",
                "valid_reward_accuracy"} <= set(data)
    # Validated every step; all pairs at the checkpoints (every 2 steps, carrying it) and the end.
    assert [s for s in sorted(metrics) if "full_valid_loss" in metrics[s]] == [2, 4]
    assert {c.step_number: (c.metrics.full_valid_loss, c.metrics.full_valid_reward_accuracy)
            for c in client(smol_server).fine_tuning.jobs.checkpoints.list(job.id).data} == {
        s: (metrics[s]["full_valid_loss"], metrics[s]["full_valid_reward_accuracy"]) for s in (2, 4)}
    rows = csv.DictReader(io.StringIO(client(smol_server).files.content(job.result_files[0]).text))
    assert [(float(r["valid_loss"]), r["train_accuracy"]) for r in rows] == [
        (metrics[s]["valid_loss"], "") for s in range(1, 5)]  # a DPO step has no token accuracy
    assert metrics[4]["valid_loss"] < 0.6931  # below the reference's log 2

    base = preference_margin(smol_server, tokenizer, held_out)
    tuned = preference_margin(smol_server, tokenizer, held_out, job.fine_tuned_model)
    print(f"held-out preference margin (nats): base {base:.3f}, DPO adapter {tuned:.3f}")
    assert tuned > base + 1.0, (base, tuned)
    assert metrics[4]["full_valid_reward_margin"] == pytest.approx(  # what the server serves
        DPO_HYPERPARAMETERS["beta"] * (tuned - base), rel=0.05, abs=5e-3)


STEPS_OVERFIT = 6


def test_over_training_shows_validation_loss_falling_then_rising(smol_server):
    """6 steps on 4 facts (the whole set each step) at 3x the base learning rate, validated
    on the 4 others every step.

    Measured (HF + PEFT, the same settings): validation loss 3.57, 3.16, 3.02, 3.02, 3.12,
    3.43 by step, while the training loss falls from 4.45 to 0.15. (At 1x it takes 12 steps:
    lowest 2.96 at step 8, 3.41 at step 12; this is the same curve in half the time.)
    """
    from openai.types.fine_tuning import FineTuningJob
    from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

    c = client(smol_server)
    train_file = upload(smol_server, ROWS[:4], name="four-facts.jsonl")
    valid_file = upload(smol_server, ROWS[4:], name="four-other-facts.jsonl")
    job = c.fine_tuning.jobs.create(
        model=MODEL, training_file=train_file.id, validation_file=valid_file.id, seed=SEED,
        suffix="overfit", hyperparameters={"n_epochs": STEPS_OVERFIT, "batch_size": 4,
                                           "learning_rate_multiplier": 3.0},
        extra_body={"lora": LORA})
    estimates = set()
    while (polled := c.fine_tuning.jobs.retrieve(job.id)).status in ("validating_files", "queued",
                                                                      "running"):
        if polled.status == "running" and polled.estimated_finish is not None:
            estimates.add(polled.estimated_finish)
        time.sleep(0.5)
    assert polled.status == "succeeded", polled.error
    # While it ran, the job estimated its finish from its measured rate, in the future of
    # its start; once finished the estimate is null, as OpenAI's is.
    assert estimates and min(estimates) >= polled.created_at, estimates
    assert polled.estimated_finish is None

    metrics = {e.data["step"]: e.data for e in events(smol_server, job.id) if e.type == "metrics"}
    steps = range(1, STEPS_OVERFIT + 1)
    assert sorted(metrics) == list(steps)
    valid = [metrics[s]["valid_loss"] for s in steps]
    train_losses = [metrics[s]["train_loss"] for s in steps]
    best = min(range(STEPS_OVERFIT), key=valid.__getitem__)
    print("validation loss by step:", [round(v, 3) for v in valid])
    assert 0 < best < STEPS_OVERFIT - 1, valid  # it falls, and the lowest point is not the end
    assert valid[best] < valid[0] - 0.3 and valid[-1] > valid[best] + 0.2, valid
    assert train_losses[-1] < train_losses[best] < train_losses[0]  # training loss keeps falling
    assert all(0 <= metrics[s]["train_mean_token_accuracy"] <= 1 and
               0 <= metrics[s]["valid_mean_token_accuracy"] <= 1 for s in metrics)
    assert metrics[STEPS_OVERFIT]["train_mean_token_accuracy"] > metrics[1]["train_mean_token_accuracy"]

    # Checkpoints (every 2 steps) carry the validation metrics of all of the validation file.
    raw = requests.get(f"{smol_server.base_url}/v1/fine_tuning/jobs/{job.id}/checkpoints",
                       headers=smol_server.headers, timeout=60).json()["data"]
    checkpoints = [FineTuningJobCheckpoint.model_validate(x) for x in raw]
    assert sorted(x.step_number for x in checkpoints) == [2, 4, 6]
    for x in checkpoints:
        m = x.metrics
        assert m.full_valid_loss == metrics[x.step_number]["full_valid_loss"] == m.valid_loss
        assert 0 <= m.full_valid_mean_token_accuracy <= 1 and m.train_loss is not None

    # The results file: listed on the job, a file of the job's own, the same numbers as the events.
    raw = requests.get(f"{smol_server.base_url}/v1/fine_tuning/jobs/{job.id}",
                       headers=smol_server.headers, timeout=60).json()
    done = FineTuningJob.model_validate(raw)  # the client's own type, every field it has
    assert len(done.result_files) == 1
    assert c.files.retrieve(done.result_files[0]).purpose == "fine-tune-results"
    rows = list(csv.DictReader(io.StringIO(c.files.content(done.result_files[0]).text)))
    assert [int(r["step"]) for r in rows] == list(steps)
    assert [float(r["valid_loss"]) for r in rows] == valid
    assert [float(r["train_accuracy"]) for r in rows] == \
        [metrics[s]["train_mean_token_accuracy"] for s in steps]
