import subprocess

from pyservecli.power import read_sample, summarize


def fake_smi(text, code=0):
    def run(argv, **_):
        assert argv[0] == "nvidia-smi"
        return subprocess.CompletedProcess(argv, code, text, "")
    return run


def test_parse_and_summarize_samples():
    sample = read_sample(fake_smi("0, 401.5, 97, 70000\n1, 398.5, 95, 69000\n"))
    assert sample == [{"gpu": 0, "watts": 401.5, "util": 97.0, "mem_mib": 70000.0},
                      {"gpu": 1, "watts": 398.5, "util": 95.0, "mem_mib": 69000.0}]
    report = summarize([sample, sample], output_tok_s=8000.0)
    assert report["avg_watts_per_gpu"] == 400.0 and report["gpus"] == 2
    assert report["output_tok_s_per_kw"] == 10000.0


def test_no_gpu_is_unavailable_not_zero():
    assert read_sample(fake_smi("", code=9)) is None
    report = summarize([], output_tok_s=100.0)
    assert report["available"] is False and "avg_watts_per_gpu" not in report
