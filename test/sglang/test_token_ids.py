import pytest

from harli_sgl.sglang.token_ids import check_token_ids


def test_ids_inside_the_vocabulary_pass():
    check_token_ids([0, 5, 262], 263)
    check_token_ids([], 263)
    check_token_ids(None, 263)


@pytest.mark.parametrize("ids,bad", [([1, 263], 263), ([-1, 4], -1), ([9, 10**6, -3], -3)])
def test_an_id_outside_is_named(ids, bad):
    with pytest.raises(ValueError, match=f"token id {bad}, outside the model's vocabulary \\[0, 263\\)"):
        check_token_ids(ids, 263)
