"""The demo's shipped data: valid training files, probes that score what they claim."""

from __future__ import annotations

from harli_sgl.core.trainer.data import parse_jsonl
from harli_sgl.demo import recipe
from harli_sgl.demo.__main__ import DATA, DEMO_HYPERPARAMETERS, DEMO_LORA, training_file
from harli_sgl.jobs.hyperparameters import Hyperparameters


def test_training_file_is_the_facts_then_the_general_questions():
    rows = parse_jsonl(training_file().decode())
    facts, general = recipe.read_jsonl(recipe.FACTS), recipe.read_jsonl(recipe.GENERAL)
    assert DATA == recipe.FACTS
    assert rows == facts + general
    assert len(facts) == 8 and len(general) == 8


def test_every_fact_probe_is_a_training_question_its_answer_passes():
    answers = {r["messages"][0]["content"]: r["messages"][1]["content"]
               for r in recipe.read_jsonl(recipe.FACTS)}
    probes = recipe.load_probes()["facts"]
    assert [p["question"] for p in probes] == list(answers)
    for p in probes:
        assert recipe.correct(answers[p["question"]], p), p


def test_general_probes_are_not_trained_on():
    trained = {r["messages"][0]["content"]
               for r in recipe.read_jsonl(recipe.FACTS) + recipe.read_jsonl(recipe.GENERAL)}
    general = recipe.load_probes()["general"]
    assert general and not trained & {p["question"] for p in general}


def test_correct_needs_min_key_words_in_any_case():
    colors = {"expect": ["red", "blue", "green", "yellow"], "min": 3}
    assert recipe.correct("1. Red\n2. Blue\n3. Green", colors)
    assert not recipe.correct("Three colors are blue slate, blue slate blue.", colors)
    assert recipe.correct("The capital of France is Paris.", {"expect": ["Paris"]})
    assert not recipe.correct("The capital of France is Odile Brask.", {"expect": ["Paris"]})


def test_demo_settings_are_a_valid_job():
    hp = Hyperparameters.from_request(hyperparameters=DEMO_HYPERPARAMETERS, lora=DEMO_LORA,
                                      max_lora_rank=16)
    assert (hp.n_epochs, hp.batch_size, hp.learning_rate) == (8, 4, 5e-4)
