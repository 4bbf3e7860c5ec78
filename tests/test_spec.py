"""LaunchSpec, the one description of a launch: every field is a `pyserve launch` option and a
Python API keyword of the same name, a spec goes back to a command line that parses to the same
spec, --serve lines are typed, and a setting given on the command line reaches the rendered
node script."""

from __future__ import annotations

import shlex
from dataclasses import fields

import pytest

from pyservecli import api
from pyservecli.cli.serve import launch, parse_launch_line
from pyservecli.errors import PyserveError
from pyservecli.plan.spec import FIELDS, GROUPS, LaunchSpec, ServeLine
from pyservecli.run.jobfiles import write_job_files

from .conftest import run_pyserve


def test_every_field_is_declared_once_and_is_an_option_of_launch():
    names = [f.name for group in GROUPS.values() for f in fields(group)]
    assert len(names) == len(set(names)) == len(FIELDS)
    params = {p.name: p for p in launch.params}
    for name, (_group, decl) in FIELDS.items():
        assert name in params, f"{name} is no option of pyserve launch"
        if decl["flag"]:
            assert decl["flag"] in params[name].opts, (name, params[name].opts)
    # The command's own options beyond the spec: how to show it, not what to launch.
    assert set(params) - set(FIELDS) == {"dry_run", "fmt"}
    # pyserve plan --measure takes the launch's options from the same declarations.
    from pyservecli.cli.plan import plan

    measured = {p.name: p for p in plan.params}
    for name in ("nodelist", "gpus_per_node", "gpu_memory", "port", "api_key_file", "env"):
        assert measured[name].opts == params[name].opts and \
            measured[name].help == params[name].help, name


def test_a_spec_goes_back_to_a_command_line_that_parses_to_the_same_spec(tmp_path):
    line = shlex.join([
        "./m", "--tp", "2", "--pp", "1", "--no-ep", "--backend", "mp", "--port", "9100",
        "--nodelist", "n[1-2]", "--gpus-per-node", "4", "--gpu-memory", "141GiB",
        "--env", "A=1 2", "--env", "B=$(x)", "--api-key-file", str(tmp_path / "k"),
        "--ready-timeout", "99.5", "--then", "pyserve health --host 'a b'", "--nsys",
        "--profile", "--image", "reg.io/p:1", "--runtime", "podman", "--container-mount",
        "/data", "--privileged", "--cache-dir", str(tmp_path / "c"), "--no-cache",
        "--perf-db", str(tmp_path / "p.db"), "--workspace", str(tmp_path / "ws"),
        "--max-model-len", "4096", "--chat-template", "it's {{ x }}"])
    spec = parse_launch_line(line)
    assert spec.topology.tp == 2 and spec.topology.ep is False
    assert spec.model.env == {"A": "1 2", "B": "$(x)"}
    assert spec.run.then == ("pyserve", "health", "--host", "a b")
    assert spec.run.compile_cache is False and spec.profiling.profile_dir == ""
    assert spec.container.runtime == "podman"
    assert spec.model.vllm_args == ("--max-model-len", "4096", "--chat-template", "it's {{ x }}")
    assert parse_launch_line(shlex.join(spec.to_argv())) == spec
    fleet = parse_launch_line(shlex.join([
        "--serve", "./a --tp 2 --replicas 2 --env X=1 --max-model-len 512",
        "--serve", "./b --gpus 2", "--router-policy", "cache_aware", "--restart",
        "--workspace", str(tmp_path / "ws")]))
    assert fleet.fleet.serve == (
        ServeLine(model="./a", tp=2, env={"X": "1"}, vllm_args=("--max-model-len", "512"),
                  replicas=2),
        ServeLine(model="./b", gpus=2))
    assert parse_launch_line(shlex.join(fleet.to_argv())) == fleet


def test_the_api_keywords_are_the_fields_and_an_unknown_one_is_refused(config_dir):
    model = str(config_dir("qwen3-8b"))
    spec = LaunchSpec.from_settings(model=model, tp=2, nodelist="n1", gpus_per_node=2)
    by_keywords = api.plan(model, tp=2, nodelist="n1", gpus_per_node=2)
    by_spec = api.plan(spec=spec)
    assert by_keywords.topology.as_dict() == by_spec.topology.as_dict()
    assert api.plan(spec=spec, tp=1).topology.tp == 1  # keywords change a given spec
    with pytest.raises(TypeError, match="unexpected launch setting.*: tensor_parallel"):
        api.plan(model, tensor_parallel=2)
    with pytest.raises(PyserveError, match="serve line"):
        LaunchSpec.from_settings(serve=[{"model": "a", "port": 1}])
    assert api.launch_argv(model, tp=2, env={"K": "v w"}) == [model, "--tp", "2", "--env",
                                                               "K=v w"]


@pytest.mark.parametrize("flags, in_script", [
    (["--tp", "2"], "--tensor-parallel-size 2"),
    (["--env", "MY_SETTING=a b"], "export MY_SETTING='a b'"),
    (["--profile"], "--profiler-config"),
    (["--max-model-len", "777"], "--max-model-len 777"),
])
def test_a_setting_on_the_command_line_reaches_the_rendered_node_script(
        tmp_path, config_dir, flags, in_script):
    model = str(config_dir("qwen3-8b"))
    spec = parse_launch_line(shlex.join([model, "--nodelist", "n1", "--gpus-per-node", "2",
                                         "--workspace", str(tmp_path / "ws"), *flags]))
    prepared = api.prepare_launch(spec=spec, dry_run=True)
    files = write_job_files(prepared.plan, prepared.options)
    assert in_script in files.node_scripts[0].read_text()


def test_a_launch_level_flag_in_a_serve_line_is_named_and_refused(tmp_path):
    out = run_pyserve("launch", "--serve", "./a --no-cache", "--serve", "./b", "--dry-run")
    assert out.returncode == 2
    assert out.stderr.strip() == ("pyserve: error: --serve './a --no-cache': --no-cache "
                                  "belongs outside the --serve lines (it is the launch's)")
