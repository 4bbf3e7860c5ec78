"""Bad input: a one-line error, exit status 2, and nothing launched (no logs, no processes)."""

import socket

import pytest

from .conftest import run_pyserve


def assert_refused(result, message, workspace):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("pyserve: error:"), result.stderr
    assert message in result.stderr
    assert not (workspace / "logs").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--backend", "slurm"], "'slurm' is not one of"),
        (["--tp", "3", "--gpus-per-node", "8"], "TP 3 does not divide the 8 GPUs per node"),
        (["--tp", "8", "--pp", "2", "--ep", "--gpus-per-node", "16"],
         "cannot be combined with expert parallelism"),
        (["--tp", "abc"], "'abc' is not a valid integer"),
        (["-tp", "abc"], "expects a whole number, got 'abc'"),
        (["--env", "NOEQUALS"], "--env expects KEY=VALUE"),
        (["--env", "BAD-NAME=1"], "not a valid environment variable name"),
        (["--api-key", "sk-secret"], "use --api-key-file"),
        (["--port", "70000"], "--port must be between 1 and 65535"),
        (["--tp", "2", "-tp", "4"], "contradicts"),
        (["--ready-timeout", "-1"], "--ready-timeout must be a positive number"),
        (["--then", ""], "--then needs a command"),
        (["--then", "echo 'unbalanced"], "No closing quotation"),
        (["--then", "pyserve health && echo done"],
         "--then runs one command without a shell, so '&&' would reach it as an argument; "
         "give the line to a shell: --then \"bash -c 'pyserve health && echo done'\""),
        (["--image", "x:1", "--container-mount", "/a:/b:/c:/d"], "give DIR, DIR:DEST or"),
        (["--image", "x:1", "--container-mount", "/a:relative"], "give an absolute path"),
        (["--router-policy", "nope", "--replicas", "2"],
         "'nope' is not one of 'round_robin'"),
        # A typo's count of GPUs (or engine processes on a CPU node) is refused at once, not
        # planned over for minutes.
        (["--gpus-per-node", "99999999999999999999"], "pyserve plans at most 64"),
        (["--dp", "100000"], "TP x PP x DP per node (no GPU found): 100000"),
    ],
)
def test_refused_before_launch(tmp_path, args, message):
    workspace = tmp_path / "ws"
    result = run_pyserve("launch", "Qwen/Qwen3-8B", "--workspace", str(workspace), *args)
    assert_refused(result, message, workspace)
    assert "sk-secret" not in result.stderr + result.stdout


@pytest.mark.parametrize("model", ["a;rm -rf /", "$(touch pwned)", "hf://org/name", " ",
                                   "org/name\nnext", "-x", "org/../name"])
def test_a_model_that_is_neither_a_directory_nor_a_hub_id_is_refused(tmp_path, model):
    """A name vLLM could only fail on (shell words, a URL, a second line, a path that climbs)
    is refused before any node starts, dry run or not."""
    workspace = tmp_path / "ws"
    for extra in ([], ["--dry-run"]):
        result = run_pyserve("launch", model, "--gpus-per-node", "1", "--workspace",
                             str(workspace), *extra, cwd=tmp_path)
        assert_refused(result, "is neither a model directory nor a Hugging Face hub id",
                       workspace)
        assert result.stderr.count("\n") == 1
    assert not (tmp_path / "pwned").exists()


def test_an_unwritable_cache_dir_is_refused_before_anything_starts(tmp_path, config_dir):
    workspace = tmp_path / "ws"
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    result = run_pyserve("launch", str(config_dir("qwen3-tiny")), "--gpus-per-node", "1",
                         "--cache-dir", str(blocker / "cache"), "--workspace", str(workspace))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"pyserve: error: --cache-dir {blocker / 'cache'}:")
    assert not (workspace / "logs").exists()
    assert blocker.read_text() == "not a directory\n"


def test_missing_model_directory(tmp_path):
    workspace = tmp_path / "ws"
    result = run_pyserve("launch", str(tmp_path / "no-such-model"), "--workspace", str(workspace))
    assert_refused(result, "does not exist", workspace)
    (tmp_path / "empty").mkdir()
    result = run_pyserve("launch", str(tmp_path / "empty"), "--workspace", str(workspace))
    assert_refused(result, "has no config.json", workspace)


def test_multi_node_plan_without_slurm(tmp_path):
    workspace = tmp_path / "ws"
    result = run_pyserve("launch", "m", "--nodelist", "a,b", "--gpus-per-node", "8",
                         "--workspace", str(workspace))
    assert_refused(result, "needs a SLURM allocation", workspace)


def test_port_in_use(tmp_path):
    workspace = tmp_path / "ws"
    with socket.socket() as holder:
        holder.bind(("", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_pyserve("launch", "m", "--port", str(port), "--workspace", str(workspace))
    assert_refused(result, f"port {port} is already in use", workspace)


def test_engine_missing_is_a_clear_error(tmp_path, config_dir, light_pyserve):
    workspace = tmp_path / "ws"
    result = light_pyserve("launch", str(config_dir("qwen3-tiny")), "--workspace", str(workspace))
    assert_refused(result, "`vllm` is not installed where pyserve runs", workspace)


def test_health_and_bench_against_nothing_say_one_line_alike():
    """#26: with no server there, health and bench both say so in one line and exit 2
    (before: health drew a table of one failed check and exited 1)."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    for command in (["health", "--timeout", "2"], ["health", "--model", "m"], ["bench"]):
        result = run_pyserve(*command, "--host", "127.0.0.1", "--port", str(port))
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert result.stderr.strip() == (f"pyserve: error: no server answers at "
                                         f"http://127.0.0.1:{port} (ConnectionError)")
        assert result.stdout == ""


def test_health_refuses_an_unknown_check_before_any_request():
    result = run_pyserve("health", "--host", "127.0.0.1", "--port", "1", "--check", "nope")
    assert result.returncode == 2
    assert "unknown check(s) nope; choose from models, completion" in result.stderr
    assert "FAIL" not in result.stdout  # nothing was asked of the (absent) server
    for timeout in ("-1", "0", "nan", "inf"):
        result = run_pyserve("health", "--host", "127.0.0.1", "--port", "1", "--timeout",
                             timeout)
        assert result.returncode == 2 and result.stdout == "", (timeout, result.stdout)
        assert result.stderr == (f"pyserve: error: --timeout must be a positive number of "
                                 f"seconds, got {float(timeout)}\n")


def test_bench_refuses_isl_without_osl_before_any_request():
    result = run_pyserve("bench", "--host", "127.0.0.1", "--port", "1", "--isl", "128")
    assert result.returncode == 2
    assert "--isl and --osl go together" in result.stderr


def test_port_with_only_lingering_connections_is_free():
    """A stopped server's connections in TIME_WAIT must not block the next launch."""
    from pyservecli.run.portprobe import is_port_free

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first: its end goes to TIME_WAIT
    client.close()
    assert not is_port_free(port)  # still listening
    server.close()
    assert is_port_free(port)  # only TIME_WAIT left


def test_a_json_file_nested_too_deeply_is_named_not_unexpected(tmp_path):
    """json's decoder recurses: a file of 100,000 nested lists is the file's fault, said so in
    one line (it was an 'unexpected RecursionError')."""
    trace = tmp_path / "t.pt.trace.json"
    trace.write_text("[" * 100_000 + "]" * 100_000)
    result = run_pyserve("trace", "summarize", str(trace))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("pyserve: error: a JSON file is nested too deeply to read")
    assert result.stderr.count("\n") == 1


def test_result_folders_with_a_fifo_or_a_pathological_file_are_read_past_them(tmp_path):
    """A FIFO named like a result blocked `perf import` and `plot` for ever (a read of a FIFO
    waits for a writer); a file of 100,000 nested lists ended the whole import. Each is now
    skipped, named, and the import finishes."""
    import os

    results = tmp_path / "results"
    (results / "custom").mkdir(parents=True)
    os.mkfifo(results / "custom" / "i1024-o256-rinf-c4.json")
    (results / "custom" / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    imported = run_pyserve("perf", "import", str(results), "--perf-db", str(tmp_path / "p.db"),
                           timeout=60)
    assert imported.returncode == 0, imported.stderr
    assert "i1024-o256-rinf-c4.json: not a regular file" in imported.stderr
    assert "deep.json: JSON nested too deeply" in imported.stderr
    plotted = run_pyserve("plot", str(results), timeout=60)
    assert plotted.returncode == 2
    assert plotted.stderr.strip().splitlines() == [
        f"pyserve: error: no valid results under {results}"]
