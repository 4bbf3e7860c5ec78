import json
import os
import subprocess
import time

import pytest

from pyservecli.bench.power import PowerSampler, read_sample, summarize
from pyservecli.bench.provenance import launch_record_for
from pyservecli.bench.runner import power_gpu_ids


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


STAND_IN_SMI = """#!/bin/sh
# Two GPUs: 0 busy, 1 idle. Honours --id=LIST like nvidia-smi.
ids=0,1
for arg; do case $arg in --id=*) ids=${arg#--id=} ;; esac; done
case ",$ids," in *,0,*) echo "0, 400.0, 95, 70000" ;; esac
case ",$ids," in *,1,*) echo "1, 70.0, 0, 500" ;; esac
"""


def test_sampler_reads_only_the_servers_gpus(tmp_path, monkeypatch):
    # Seen on 2x H200: a one-GPU server's power was averaged with the idle second GPU.
    smi = tmp_path / "nvidia-smi"
    smi.write_text(STAND_IN_SMI)
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    everything = read_sample()
    assert [row["gpu"] for row in everything] == [0, 1]
    with PowerSampler(interval=0.05, gpu_ids="0") as sampler:
        time.sleep(0.3)
    report = summarize(sampler.samples, output_tok_s=4000.0)
    assert report["gpus"] == 1 and report["avg_watts_per_gpu"] == 400.0
    assert report["output_tok_s_per_kw"] == 10000.0


def live_record(tmp_path, **fields) -> dict:
    """A launch record as a live local launcher writes it (its PID: this process)."""
    import os
    import socket

    heartbeat = tmp_path / "launcher.heartbeat"
    heartbeat.touch()
    return {"endpoint": "http://127.0.0.1:8123/v1", "cuda_visible_devices": "1",
            "state": "ready", "launcher_pid": os.getpid(),
            "launcher_host": socket.gethostname(), "heartbeat": str(heartbeat), **fields}


def test_power_gpus_come_from_the_launch_record(tmp_path, monkeypatch):
    record = live_record(tmp_path)
    (tmp_path / "latest.json").write_text(json.dumps(record))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert power_gpu_ids(launch_record_for("http://127.0.0.1:8123", tmp_path)) == "1"
    # Not this workspace's server: the benchmark process's own GPUs.
    assert power_gpu_ids(launch_record_for("http://127.0.0.1:9000", tmp_path)) == "0,1"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert power_gpu_ids(launch_record_for("http://127.0.0.1:9000", None)) is None


@pytest.mark.parametrize("change", [
    {"state": "finished"},  # that launch ended: whatever answers on the port now is another
    {"launcher_host": "elsewhere", "endpoint": "http://10.1.2.3:8123/v1"},  # same port, other host
    {"launcher_pid": 2 ** 22 + 12345},  # its launcher is gone
])
def test_a_stale_or_foreign_launch_record_is_not_attached(tmp_path, change):
    """Only a live launch of the same host and port describes the server being benchmarked
    (a stale latest.json once attached TP 8 x DP 2 to an unrelated server)."""
    (tmp_path / "latest.json").write_text(json.dumps(live_record(tmp_path, **change)))
    assert launch_record_for("http://127.0.0.1:8123", tmp_path) is None
    (tmp_path / "latest.json").write_text(json.dumps(live_record(tmp_path)))
    assert launch_record_for("http://127.0.0.1:8123", tmp_path) is not None
    assert launch_record_for("http://10.9.9.9:8123", tmp_path) is None


def test_power_counts_only_the_measured_window():
    """#29 item 1: the sampler runs for the whole client process; the report averages only the
    samples taken while requests ran (here 300 W idle around a 700 W window)."""
    from pyservecli.bench.power import window_summary

    stamps = [100.0 + i for i in range(20)]
    samples = [[{"gpu": 0, "watts": 700.0 if 105 <= t <= 110 else 300.0, "util": 90.0,
                 "mem_mib": 1000.0}] for t in stamps]
    report = window_summary(samples, stamps, 105.0, 110.0, output_tok_s=7000.0)
    assert report["avg_watts_per_gpu"] == 700.0 and report["output_tok_s_per_kw"] == 10000.0
    assert (report["samples_in_window"], report["samples_total"]) == (6, 20)
    assert report["window_s"] == 5.0
    # A window shorter than the sampling interval: said, never an idle average.
    empty = window_summary(samples, stamps, 105.2, 105.4, output_tok_s=7000.0)
    assert empty["available"] is False and "inside the measured window" in empty["reason"]
    assert window_summary([], [], 0.0, 1.0, 7000.0)["available"] is False


def test_sampler_stamps_every_sample(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text(STAND_IN_SMI)
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    before = time.time()
    with PowerSampler(interval=0.05, gpu_ids="0") as sampler:
        time.sleep(0.3)
    assert len(sampler.stamps) == len(sampler.samples) >= 2
    assert before <= sampler.stamps[0] <= sampler.stamps[-1] <= time.time()
