"""`pyserve plot` on result files shaped as `pyserve bench` writes them."""

import json
import struct

import pytest

from pyservecli.bench.plot import load_samples, pareto_front
from pyservecli.errors import PyserveError


def write_result(root, suite, point, conc, tput, tpot, gpus=2, status="ok"):
    path = root / suite / f"{point}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "max_concurrency": conc, "request_rate": "inf", "output_throughput": tput,
        "median_tpot_ms": tpot, "median_ttft_ms": 100.0, "median_e2el_ms": 5000.0,
        "pyserve": {"status": status, "suite": suite, "point": point,
                    "provenance": {"gpus": {"count": gpus}},
                    "power": {"output_tok_s_per_kw": tput / 0.8}}}))


@pytest.fixture
def results(tmp_path):
    for name, scale in (("tp2", 1.0), ("dp2", 1.3)):
        for conc in (1, 4, 16, 64):
            write_result(tmp_path / name, "concurrency", f"c{conc}", conc,
                         tput=100.0 * conc ** 0.8 * scale, tpot=10.0 + conc / 4)
    write_result(tmp_path / "tp2", "concurrency", "broken", 2, 0.0, 1.0, status="invalid")
    return tmp_path


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_samples_per_configuration_skip_invalid_points(results):
    samples = load_samples([results / "tp2", results / "dp2"])
    assert {s.config for s in samples} == {"tp2", "dp2"}
    assert len(samples) == 8  # the invalid point is left out
    c16 = next(s for s in samples if s.config == "tp2" and s.x == 16)
    assert c16.tput_per_gpu == pytest.approx(100.0 * 16 ** 0.8 / 2)
    assert c16.interactivity == pytest.approx(1000 / 14.0)


def test_pareto_front():
    assert pareto_front([(1, 10), (2, 8), (1.5, 5), (3, 1), (2, 9)]) == [(1, 10), (2, 9), (3, 1)]


def test_plot_with_only_the_light_install(results, light_pyserve):
    out = results / "plots"
    run = light_pyserve("plot", str(results / "tp2"), str(results / "dp2"), "--out", str(out))
    assert run.returncode == 0, run.stderr
    width, height = png_size(out / "panels.png")
    assert width > 1000 and height > 300
    assert png_size(out / "pareto.png")[0] > 400


def test_plot_of_nothing_is_a_clear_error(tmp_path):
    with pytest.raises(PyserveError, match="no valid results"):
        load_samples([tmp_path])
