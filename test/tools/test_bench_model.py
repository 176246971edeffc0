import os

import pytest

from harli_sgl.model import byte_model, smollm2
from harli_sgl.tools import bench_model


def test_each_choice_names_the_model_it_serves_and_the_flags_serve_it_under_that_name():
    tiny = bench_model.resolve("byte-tiny")
    assert tiny.served_name == byte_model.SPECS["tiny"].name
    assert os.path.isfile(os.path.join(tiny.path, "config.json"))
    assert tiny.server_flags() == ["--model-path", tiny.path, "--served-model-name", tiny.served_name]
    default = bench_model.resolve()
    assert (default.path, default.served_name) == (smollm2.ensure(), smollm2.SERVED_NAME)
    assert default.server_flags() == smollm2.server_flags()


def test_an_unknown_model_is_refused_by_name():
    with pytest.raises(ValueError, match="byte-huge"):
        bench_model.resolve("byte-huge")
