"""What a benchmark result must say to be defended (#29): the prefix-cache hit rate of the point
(and, asked for, an emptied cache before it), and the code that ran (commit, and whether the
checkout had changes)."""

import http.server
import subprocess
import threading

from pyservecli.bench import provenance
from pyservecli.bench.runner import (
    cache_counters,
    cache_delta,
    reset_prefix_caches,
    server_urls,
)

from .conftest import run_pyserve
from .standin_openai import standin_server

METRICS = """# HELP vllm:prefix_cache_queries Prefix cache queries, in queried tokens.
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} %s
vllm:prefix_cache_queries_total{engine="1",model_name="m"} %s
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} %s
vllm:prefix_cache_hits_total{engine="1",model_name="m"} %s
"""


def serve_metrics(values):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = (METRICS % tuple(values)).encode() if self.path == "/metrics" else b""
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_prefix_cache_hit_rate_of_a_point():
    values = [1000, 1000, 100, 0]
    server = serve_metrics(values)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        before = cache_counters((url,))
        assert before == {"queries": 2000.0, "hits": 100.0}  # both engines summed
        values[:] = [3000, 3000, 1100, 1000]
        got = cache_delta(before, cache_counters((url,)))
        assert got == {"available": True, "queried_tokens": 4000, "hit_tokens": 2000,
                       "hit_rate": 0.5}
        # Two servers behind a fleet's gate: both scraped and summed.
        assert cache_counters((url, url)) == {"queries": 12000.0, "hits": 4200.0}
    finally:
        server.shutdown()
        server.server_close()
    # Nothing to read (a router, a server gone): said, never a zero.
    gone = cache_delta(None, cache_counters((url,)))
    assert gone["available"] is False and "prefix-cache" in gone["reason"]


def test_fleet_servers_come_from_the_record():
    record = {"roles": {"replicas": [{"url": "http://127.0.0.1:8001"},
                                     {"url": "http://127.0.0.1:8002"}, {"index": 2}]}}
    assert server_urls(record) == ("http://127.0.0.1:8001", "http://127.0.0.1:8002")
    assert server_urls(None) == () and server_urls({"roles": "x"}) == ()


def test_provenance_names_pyserves_own_commit_and_dirty_tree(tmp_path, monkeypatch):
    repo = tmp_path / "checkout"
    repo.mkdir()
    (repo / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    monkeypatch.setattr(provenance, "SOURCE_ROOT", repo)
    monkeypatch.chdir(tmp_path)  # the benchmark's own directory is not what ran
    sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    found = provenance._where_and_when()
    assert found["git_sha"] == sha.strip() and found["git_dirty"] is False
    assert "git_diff_sha256" not in found
    (repo / "pyproject.toml").write_text("[project]\nname = 'changed'\n")
    dirty = provenance._where_and_when()
    assert dirty["git_dirty"] is True and len(dirty["git_diff_sha256"]) == 16
    (repo / "pyproject.toml").write_text("[project]\nname = 'other'\n")
    assert provenance._where_and_when()["git_diff_sha256"] != dirty["git_diff_sha256"]
    # Installed from a wheel: no checkout of pyserve's own, so no commit is claimed.
    monkeypatch.setattr(provenance, "SOURCE_ROOT", tmp_path / "site-packages")
    assert provenance.git_sha() is None and provenance.git_dirty() is None


def test_a_server_pyserve_did_not_launch_says_what_it_is_and_the_stated_command():
    """#29: for a server without a launch record, its own /v1/models and the command the user
    states (--server-argv) go into the provenance; secret values never do."""
    import pytest

    from pyservecli.errors import PyserveError

    from .standin_openai import standin_server

    argv = provenance.stated_argv("vllm serve Qwen/Qwen3-8B --tp 2 --api-key s3cret "
                                  "--hf-token=hf_x --max-num-seqs 64")
    assert argv == ["vllm", "serve", "Qwen/Qwen3-8B", "--tp", "2", "--api-key", "<redacted>",
                    "--hf-token=<redacted>", "--max-num-seqs", "64"]
    with pytest.raises(PyserveError, match="--server-argv: not a command line"):
        provenance.stated_argv("vllm serve 'unclosed")
    with standin_server(api_key="k3y", models=["model-a"]) as base:
        found = provenance.provenance(base, None, model="model-a", server_argv=argv,
                                      api_key="k3y")
    assert [card["id"] for card in found["server_models"]] == ["model-a"]
    assert found["server_argv_stated"] == argv and found["server_argv"] is None
    assert "s3cret" not in str(found) and "k3y" not in str(found)


def serve_resets(answers: list, seen: list):
    """A server answering POST /reset_prefix_cache with ``answers`` in turn ((status, body)),
    the last one for good; ``seen`` gets each request's Authorization header."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            seen.append(self.headers.get("Authorization"))
            status, body = answers.pop(0) if len(answers) > 1 else answers[0]
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_prefix_cache_reset_retries_while_blocks_are_held_and_says_why_it_cannot():
    """vLLM answers {"success": false} while blocks are still held (it says retry) and 404
    without VLLM_SERVER_DEV_MODE; the key goes along for a keyed server."""
    seen: list = []
    busy, busy_url = serve_resets([(200, '{"success": false}'), (200, '{"success": false}'),
                                   (200, '{"success": true}')], seen)
    plain, plain_url = serve_resets([(404, '{"detail": "Not Found"}')], [])
    stuck, stuck_url = serve_resets([(200, '{"success": false}')], [])
    try:
        assert reset_prefix_caches((busy_url,), "k3y", pause_s=0.01) is None
        assert seen == ["Bearer k3y"] * 3
        said = reset_prefix_caches((busy_url, plain_url))
        assert plain_url in said and "VLLM_SERVER_DEV_MODE=1" in said
        assert "still in use after 2 tries" in reset_prefix_caches((stuck_url,), tries=2,
                                                                   pause_s=0.01)
    finally:
        for server in (busy, plain, stuck):
            server.shutdown()
            server.server_close()
    gone = reset_prefix_caches((plain_url,))
    assert "did not answer" in gone


def test_bench_reset_prefix_cache_refused_before_any_point_where_the_server_does_not_allow_it(
        tmp_path):
    """A server without vLLM's dev mode (the stand-in answers 404, as vLLM does): one clear
    error, exit 2, nothing measured."""
    with standin_server() as base:
        host, port = base.removeprefix("http://").split(":")
        result = run_pyserve("bench", "--host", host, "--port", port, "--isl", "8", "--osl",
                             "4", "--reset-prefix-cache", "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"pyserve: error: --reset-prefix-cache: {base} does not "
                                    "serve POST /reset_prefix_cache")
    assert "VLLM_SERVER_DEV_MODE=1" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "custom").exists()
