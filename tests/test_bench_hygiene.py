"""What a benchmark result must say to be defended (#29): the prefix-cache hit rate of the point,
and the code that ran (commit, and whether the checkout had changes)."""

import http.server
import subprocess
import threading

from pyservecli.bench import provenance
from pyservecli.bench.runner import cache_counters, cache_delta, server_urls

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
