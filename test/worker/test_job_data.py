from harli_sgl.jobs.hyperparameters import Hyperparameters
from harli_sgl.worker.job_data import micro_batch_size


def hp(method: str, batch_size: int) -> Hyperparameters:
    return Hyperparameters.from_request(
        hyperparameters=None,
        method={"type": method, method: {"hyperparameters": {"batch_size": batch_size}}})


def test_a_micro_batch_holds_the_servers_rows_and_a_dpo_pair_is_two_of_them():
    assert micro_batch_size(hp("supervised", 8), rows=4) == 4
    assert micro_batch_size(hp("supervised", 2), rows=4) == 2  # never more than the batch
    assert micro_batch_size(hp("dpo", 8), rows=4) == 2  # 2 pairs = 4 sequences
    assert micro_batch_size(hp("dpo", 8), rows=1) == 1  # at least one pair
