import pytest

from pyservecli.errors import PyserveError
from pyservecli.plan.vllm_args import merge_setting, option_value, split_parallel_flags


@pytest.mark.parametrize(
    "args",
    [
        ["--tensor-parallel-size", "8"],
        ["-tp", "8"],
        ["--tensor-parallel-size=8"],
        ["-tp=8"],
    ],
)
def test_every_spelling_of_tp(args):
    flags, rest = split_parallel_flags(args + ["--max-model-len", "4096"])
    assert flags.tp == 8
    assert rest == ["--max-model-len", "4096"]


def test_pp_dp_ep_spellings_and_order_of_the_rest_kept():
    flags, rest = split_parallel_flags(
        ["--gpu-memory-utilization", "0.9", "--pipeline-parallel-size", "2", "-dp=4",
         "--enable-expert-parallel", "--trust-remote-code"])
    assert (flags.tp, flags.pp, flags.dp, flags.ep) == (None, 2, 4, True)
    assert rest == ["--gpu-memory-utilization", "0.9", "--trust-remote-code"]
    assert split_parallel_flags(["-ep"])[0].ep is True
    assert split_parallel_flags(["--no-enable-expert-parallel"])[0].ep is False


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data-parallel-start-rank", "1"], "set by pyserve"),
        (["--headless"], "set by pyserve"),
        (["--nnodes", "2"], "set by pyserve"),
        (["--port", "9000"], "pyserve's --port"),
        (["--api-key", "sk-123"], "--api-key-file"),
        (["--api-key=sk-123"], "--api-key-file"),
        (["-tp", "eight"], "expects a whole number"),
        (["-tp", "0"], "at least 1"),
        (["-tp"], "needs a value"),
        (["-tp", "2", "--tensor-parallel-size", "4"], "given twice"),
    ],
)
def test_refused_flags(args, message):
    with pytest.raises(PyserveError, match=message):
        split_parallel_flags(args)


def test_secret_never_echoed_in_the_error():
    with pytest.raises(PyserveError) as err:
        split_parallel_flags(["--api-key", "sk-very-secret"])
    assert "sk-very-secret" not in str(err.value)


def test_merge_conflict_and_agreement():
    assert merge_setting("tp", 8, 8) == 8
    assert merge_setting("tp", None, 4) == 4
    with pytest.raises(PyserveError, match="contradicts"):
        merge_setting("tp", 8, 4)


def test_option_value():
    assert option_value(["--served-model-name", "a", "b"], "--served-model-name") == "a"
    assert option_value(["--served-model-name=x"], "--served-model-name") == "x"
    assert option_value([], "--served-model-name") is None
