#!/usr/bin/env bash
# Rendered by pyserve 0.1.0 for launch local-20261123-100534-4355.r0-c1c90er0: node rank 0 (vm).
# Re-run `pyserve launch` to regenerate; edits here are overwritten.
# Arguments are single-quoted on purpose: they reach vLLM literally, never expanded.
# shellcheck disable=SC2016
set -uo pipefail
# This node's log, whoever started the script (a local process or srun on the node).
exec >>/tmp/ws-pd/logs/local-20261123-100534-4355.r0-c1c90er0/vm.log 2>&1

export PATH=/opt/torch/.venv/bin:/tmp/site/bin:/opt/torch/.venv/bin:/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/gcc/bin
export PYSERVE_JOB_ID=local-20261123-100534-4355.r0-c1c90er0
export PYSERVE_NODE_RANK=0
export CUDA_VISIBLE_DEVICES=0
host=vm
exit_file=/tmp/ws-pd/logs/local-20261123-100534-4355.r0-c1c90er0/vm.exit
rm -f "$exit_file"
# shellcheck disable=SC2317,SC2329  # used only when a key or secrets file is read
fail() {
    echo "pyserve: RuntimeError: $1"
    echo 1 >"$exit_file"
    exit 1
}
# vLLM's compile cache (and Triton's, FlashInfer's JIT caches) in the shared workspace, one per
# vLLM version and GPU type: later launches of the same shape, on any node, start warm.
if [ -z "${VLLM_CACHE_ROOT:-}" ]; then
    if VLLM_CACHE_ROOT=$(/opt/torch/.venv/bin/python3 -m pyservecli.workers.cachedir /tmp/ws-pd/cache) && [ -n "$VLLM_CACHE_ROOT" ]; then
        export VLLM_CACHE_ROOT
        export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-$VLLM_CACHE_ROOT/triton}"
        export FLASHINFER_WORKSPACE_BASE="${FLASHINFER_WORKSPACE_BASE:-$VLLM_CACHE_ROOT}"
        # Python's bytecode too: images often set PYTHONDONTWRITEBYTECODE=1 (and site-packages
        # may be read-only), and then every process of every launch compiles vLLM's modules
        # anew (an H100 node: 30 s to import the API server, 16 s from this cache).
        export PYTHONPYCACHEPREFIX="${PYTHONPYCACHEPREFIX:-$VLLM_CACHE_ROOT/pycache}"
        unset PYTHONDONTWRITEBYTECODE
        echo "pyserve: compile cache $VLLM_CACHE_ROOT"
    fi
fi
# torch's gloo picks its interface from the host name, which on many nodes resolves to a
# loopback address; bind it to the interface that holds this node's address instead.
if [ -z "${GLOO_SOCKET_IFNAME:-}" ] && [ -n "${VLLM_HOST_IP:-}" ]; then
    GLOO_SOCKET_IFNAME=$(/opt/torch/.venv/bin/python3 -m pyservecli.workers.gloo_ifname)
    if [ -n "$GLOO_SOCKET_IFNAME" ]; then
        export GLOO_SOCKET_IFNAME
        echo "pyserve: GLOO_SOCKET_IFNAME=$GLOO_SOCKET_IFNAME (holds $VLLM_HOST_IP)"
    fi
fi
child=
stopping=

# shellcheck disable=SC2317,SC2329  # called through the trap (0.9 says 2317, 0.10+ 2329)
stop() {
    stopping=1
    # Forward the stop to the server so it can shut its engine processes down cleanly
    # (SIGINT under nsys, which then writes its report before exiting).
    [ -n "$child" ] && kill -TERM "$child" 2>/dev/null
}
trap stop TERM INT HUP

heartbeat=/tmp/ws-pd/logs/local-20261123-100534-4355.r0-c1c90er0/launcher.heartbeat
# The launcher touches $heartbeat every few seconds. When it stops doing so (the launcher was
# killed), this node stops its server rather than serve on unsupervised.
# shellcheck disable=SC2317,SC2329  # runs in the background subshell below
watch_launcher() {
    local sleeper='' now beat
    trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
    while :; do
        sleep 5 &
        sleeper=$!
        wait "$sleeper"
        now=$(date +%s)
        beat=$(stat -c %Y "$heartbeat" 2>/dev/null || echo 0)
        if [ $((now - beat)) -gt 45 ]; then
            echo "pyserve: no word from the launcher for $((now - beat))s ($heartbeat); stopping node 0"
            kill -TERM $$
            exit 0
        fi
    done
}
watch_launcher &
watcher=$!

if [ -n "$stopping" ]; then
    # Stopped during the set-up (the launcher stopped, or was lost): no server is started.
    echo "pyserve: node 0 ($host) stopped before its server started"
    kill "$watcher" 2>/dev/null
    /opt/torch/.venv/bin/python3 -m pyservecli.workers.reap local-20261123-100534-4355.r0-c1c90er0 0
    echo 143 >"$exit_file"
    exit 143
fi
echo "pyserve: node 0 ($host) starting: "'vllm serve /tmp/models/qwen3-8b --port 8001 --tensor-parallel-size 1 --load-format dummy --max-model-len 4096'
vllm serve /tmp/models/qwen3-8b --port 8001 --tensor-parallel-size 1 --load-format dummy --max-model-len 4096 &
child=$!
while :; do
    wait "$child"
    rc=$?
    # wait returns early when a trapped signal arrives; keep waiting until the child is gone.
    kill -0 "$child" 2>/dev/null || break
done
kill "$watcher" 2>/dev/null
wait "$watcher" 2>/dev/null
# Whatever this node's rank left behind (engine processes, detached Ray daemons) carries the
# job id and rank in its environment; stop exactly those.
/opt/torch/.venv/bin/python3 -m pyservecli.workers.reap local-20261123-100534-4355.r0-c1c90er0 0
echo "$rc" >"$exit_file"
exit "$rc"
