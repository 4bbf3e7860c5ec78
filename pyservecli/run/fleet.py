"""Run a fleet: every replica's launch, the router in front, READY through the router, and a
replica's death survived (taken out of rotation, restarted with ``--restart``).

Each replica is an ordinary ``Launch`` (its own scripts, logs, heartbeat and record); the router
is one local process. The fleet's own record (``WORKSPACE/latest.json`` and
``fleet-<id>.json``) names the router's endpoint and every role, for ``pyserve status`` and the
provenance of ``pyserve bench``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from urllib.parse import quote

import requests

from pyservecli import __version__
from pyservecli.errors import PyserveError
from pyservecli.plan.fleet import ROUTER_HEALTH_INTERVAL_S, FleetPlan, worker_url
from pyservecli.plan.launch import KEY_ENV_NAMES, LaunchPlan
from pyservecli.run.jobfiles import bin_dir, image_record, write_private
from pyservecli.run.launcher import (
    Launch,
    LaunchOptions,
    NodeFailed,
    Runner,
    supervise,
    tail,
)
from pyservecli.run.prometheus import (
    remove_targets,
    sd_path,
    server_group,
    target_group,
    write_targets,
)
from pyservecli.run.readiness import auth_headers, probe_ready

Say = Callable[[str], None]
# --restart brings a replica back this many times; one that keeps dying (a bad node, a model
# that cannot load) is then left dead rather than reloaded forever.
MAX_RESTARTS = 3


def find_router() -> str:
    found = shutil.which("vllm-router", path=bin_dir() + os.pathsep + os.environ.get("PATH", ""))
    if found is None:
        raise PyserveError("`vllm-router` is not installed where pyserve runs (pip install "
                           "vllm-router; it comes with pyserve[engine])")
    return found


@dataclass
class Replica:
    index: int
    plan: LaunchPlan
    launch: Launch | None = None
    state: str = "starting"  # starting | serving | dead | restarting | stopped
    deaths: int = 0
    restarting: threading.Thread | None = None

    @property
    def url(self) -> str:
        return worker_url(self.plan)


class Fleet(Runner):
    """Servers behind vllm-router: replicas, several models, or prefill/decode."""

    def __init__(self, plan: FleetPlan, options: LaunchOptions, restart: bool = False,
                 say: Say = lambda m: print(m, file=sys.stderr, flush=True)):
        self.plan = plan
        self.options = options
        self.restart = restart
        # The servers start and stop in threads of their own: one line at a time, never two
        # run together ("[replica 1] stopping[replica 0] stopping").
        lock = threading.Lock()

        def say_line(line: str) -> None:
            with lock:
                say(line)

        self.say = say_line
        self.replicas = [Replica(i, p) for i, p in enumerate(plan.replicas)]
        self.router: subprocess.Popen | None = None
        self.gate: subprocess.Popen | None = None
        self.router_deaths = 0
        self.router_log = options.workspace / "logs" / f"router-{self.fleet_id}.log"
        self.gate_log = options.workspace / "logs" / f"gate-{self.fleet_id}.log"
        self.api_key = None
        self.stopping = threading.Event()
        self.t0 = time.monotonic()

    @property
    def fleet_id(self) -> str:
        return self.plan.fleet_id

    @property
    def record_path(self):
        return self.options.workspace / f"fleet-{self.fleet_id}.json"

    @property
    def router_url(self) -> str:
        """The fleet's endpoint as clients see it: pyserve's gate (no /v1)."""
        return self.plan.router.local_url

    @property
    def admin_url(self) -> str:
        """vllm-router itself, on loopback: its management API, for this launcher only."""
        return self.plan.router.admin_url

    # -- records ---------------------------------------------------------------------------
    def record(self, state: str, **extra) -> None:
        first = self.replicas[0]
        heartbeats = [str(r.launch.files.heartbeat) for r in self.replicas
                      if r.launch and r.launch.files]
        record = {
            "pyserve_version": __version__,
            "job_id": self.plan.job_id,
            "launch_id": self.fleet_id,
            "model": first.plan.model,
            "served_model_name": self.plan.served_model_name,
            "models": self.plan.models,
            "endpoint": self.plan.endpoint,
            "log_dir": str(self.router_log.parent),
            "launcher_pid": os.getpid(),
            "launcher_host": socket.gethostname(),
            # This launcher touches every replica's: any one tells whether it lives, and
            # `pyserve stop` expires them all when the launcher is gone.
            "heartbeat": heartbeats[0] if heartbeats else None,
            "heartbeats": heartbeats,
            # Where this record lives (`pyserve stop` follows it, latest.json may move on).
            "record": str(self.record_path),
            "state": state,
            "gpus_serving": self.plan.gpus,
            "roles": {"router": {**self.plan.router.as_dict(), "log": str(self.router_log),
                                 "gate_log": str(self.gate_log),
                                 "pid": self.router.pid if self.router else None,
                                 "gate_pid": self.gate.pid if self.gate else None,
                                 "deaths": self.router_deaths},
                      "replicas": [{"index": r.index, "url": r.url, "state": r.state,
                                    "role": self.plan.role(r.index),
                                    "label": self.plan.label(r.index),
                                    "model": r.plan.served_model_name,
                                    "source": r.plan.model,
                                    "deaths": r.deaths,
                                    "launch_id": r.launch.plan.launch_id if r.launch else None,
                                    "topology": r.plan.topology.as_dict(),
                                    "argv": r.plan.nodes[0].argv} for r in self.replicas]},
            # The first replica's plan: what `pyserve bench` records as the server command.
            "plan": self.plan.replicas[0].as_dict(),
            "image": image_record(self.options.container),
            **extra,
        }
        text = json.dumps(record, indent=2) + "\n"
        write_private(self.record_path, text)
        write_private(self.options.workspace / "latest.json", text)
        self.write_scrape_targets(state)

    def write_scrape_targets(self, state: str) -> None:
        """Prometheus' file_sd list: the servers serving now and the router; none once the
        fleet has ended (run/prometheus)."""
        path = sd_path(self.options.workspace, self.fleet_id)
        if state in ("stopped", "failed", "finished"):
            remove_targets(path)
            return
        host = socket.gethostname()
        groups = [server_group(r.plan, launch_id=self.fleet_id, role=self.plan.role(r.index))
                  for r in self.replicas if r.state == "serving"]
        if self.router is not None:
            groups.append(target_group(f"127.0.0.1:{self.plan.router.metrics_port}",
                                       launch_id=self.fleet_id, role="router",
                                       model=",".join(self.plan.models), host=host,
                                       scope="local"))
        write_targets(path, groups)

    # -- phases ----------------------------------------------------------------------------
    def _new_launch(self, replica: Replica, attempt: int) -> Launch:
        plan = replica.plan
        if attempt:
            plan = replace(plan, launch_suffix=f"{plan.launch_suffix}-{attempt}")

        def say(line: str, index: int = replica.index) -> None:
            self.say(f"[{self.plan.label(index)}] {line}")

        return Launch(plan, replace(self.options, workspace_record=False), say=say)

    def bring_up(self) -> None:
        find_router()
        self.options.workspace.mkdir(parents=True, exist_ok=True)
        for replica in self.replicas:
            replica.launch = self._new_launch(replica, 0)
            self.api_key = replica.launch.api_key
            replica.launch.start()
        self.record("starting")
        # Waited on one after another, in this thread (one in a thread each made the CPU 1P1D
        # engine test hang in a NIXL KV pull, cause not found); the servers not waited on yet
        # have their logs read meanwhile, so every server's phases are said as they happen.
        for number, replica in enumerate(self.replicas):
            later = [r.launch for r in self.replicas[number + 1:] if r.launch is not None]

            def follow_later(later=later) -> None:
                for launch in later:
                    launch.follow_phases()

            try:
                replica.launch.wait_ready(meanwhile=follow_later)
            except NodeFailed as failure:
                raise PyserveError(f"{self.plan.label(replica.index)} failed before READY: "
                                   f"{replica.launch.report_failure(failure)}; logs in "
                                   f"{replica.launch.files.log_dir}") from None
            replica.state = "serving"
            self.say(f"pyserve: {self.plan.label(replica.index)} READY at {replica.url} "
                     f"({replica.launch.times['ready_s']:.1f}s)")
        self.start_router()
        self.record("ready", ready_s=round(time.monotonic() - self.t0, 2))

    def _tethered(self, argv: list[str], log_path, env: dict) -> subprocess.Popen:
        """A process of this launcher's own host that ends with it, even by SIGKILL."""
        argv = [sys.executable, "-m", "pyservecli.workers.tether", str(os.getpid()), *argv]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as log:
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    stdin=subprocess.DEVNULL, start_new_session=True)

    @staticmethod
    def _env_without_keys() -> dict:
        return {k: v for k, v in os.environ.items() if k not in KEY_ENV_NAMES}

    def _router_env(self) -> dict:
        """The router's environment: the key only in P/D mode, where the router sends its own
        (``OPENAI_API_KEY``) to both servers instead of the client's header; in the other modes
        it forwards the client's header and needs none."""
        env = self._env_without_keys()
        if self.api_key and self.plan.router.pd:
            env["OPENAI_API_KEY"] = self.api_key
        return env

    def start_router(self) -> None:
        """vllm-router on loopback and the gate on the public port; READY once the router lists
        every serving server and each model answers through the gate."""
        self._start_router_process()
        key_file = str(self.options.api_key_file.resolve()) if self.options.api_key_file \
            else None
        self.gate = self._tethered([sys.executable, "-m", "pyservecli.workers.gate",
                                    *self.plan.router.gate_argv(key_file)], self.gate_log,
                                   self._env_without_keys())
        serving = [r for r in self.replicas if r.state == "serving"]
        self.say(f"pyserve: router on {self.plan.router.endpoint} ({self.plan.router.policy}, "
                 f"{self._mode_words()}) in front of {len(serving)} servers; its management "
                 f"API on 127.0.0.1:{self.plan.router.admin_port} only; logs {self.router_log}")
        # What is left of --ready-timeout, and at least 2 minutes: the first request through
        # a P/D router also makes the NIXL handshake, slow on a loaded CPU machine.
        budget = max(120.0, self.options.ready_timeout - (time.monotonic() - self.t0))
        deadline = time.monotonic() + budget
        why = "not probed"
        registered: set[str] = set()
        wanted = {r.url for r in serving}
        last_note = time.monotonic()
        while time.monotonic() < deadline:
            if time.monotonic() - last_note >= 15:  # never minutes of silence (#26)
                last_note = time.monotonic()
                listed = self.router_workers() or []
                self.say(f"pyserve: waiting for the router: it lists {len(set(listed) & wanted)}"
                         f" of {len(wanted)} servers; last probe through the gate: {why}")
            for name, process, log in (("router", self.router, self.router_log),
                                       ("gate", self.gate, self.gate_log)):
                if process.poll() is not None:
                    raise PyserveError(f"the {name} exited with status {process.returncode}: "
                                       f"{tail(log, 5)}")
            if self.plan.router.igw:
                for replica in serving:
                    if replica.url not in registered and self._add(replica):
                        registered.add(replica.url)
            listed = self.router_workers()
            if listed is not None and set(listed) >= wanted:
                for url in set(listed) - wanted:
                    if not self.plan.router.pd:  # a dead server named in the router's argv
                        self._remove(url)
                ok, why = self.probe_models()
                if ok:
                    self.say(f"pyserve: READY through the router in "
                             f"{time.monotonic() - self.t0:.1f}s")
                    return
                if "401" in why and self.api_key:
                    raise PyserveError(f"the router answered 401 Unauthorized with the launch's "
                                       f"key ({why}); see {self.router_log}")
            time.sleep(0.5)
        raise PyserveError(f"the router did not answer READY in {budget:.0f} s (last probe: "
                           f"{why}); see {self.router_log} and {self.gate_log}")

    def _start_router_process(self) -> None:
        """vllm-router, until its management API answers. Its ports were free when planned,
        maybe minutes ago (models load first): one taken since (a client connection's local
        port, another program) moves the router to two other free ports."""
        for attempt in range(3):
            self.router = self._tethered([find_router(), *self.plan.router.argv()[1:]],
                                         self.router_log, self._router_env())
            deadline = time.monotonic() + 60
            while self.router.poll() is None and time.monotonic() < deadline:
                if self.router_workers() is not None:
                    return
                time.sleep(0.2)
            if self.router.poll() is None:
                return  # slow to start: the READY loop waits on
            if "Address already in use" not in tail(self.router_log, 20) or attempt == 2:
                raise PyserveError(f"the router exited with status {self.router.returncode}: "
                                   f"{tail(self.router_log, 5)}")
            old = self.plan.router
            self.plan.router = replace(old, **self._two_free_ports(old))
            self.say(f"pyserve: the router's port {old.admin_port} or {old.metrics_port} was "
                     f"taken since it was planned; moved to {self.plan.router.admin_port} and "
                     f"{self.plan.router.metrics_port}")

    def _two_free_ports(self, router) -> dict:
        from pyservecli.run.portreserve import is_free_here, reserve

        found: list[int] = []
        port = max(router.admin_port, router.metrics_port)
        while len(found) < 2:
            port += 1
            if port > 65535:
                raise PyserveError("no free port left for the router")
            if is_free_here(port) and not reserve([port]):
                found.append(port)
        return {"admin_port": found[0], "metrics_port": found[1]}

    def _mode_words(self) -> str:
        router = self.plan.router
        if router.pd:
            return (f"P/D: {len(router.prefill_urls)} prefill, {len(router.decode_urls)} "
                    "decode")
        if router.igw:
            return f"{len(self.plan.models)} models"
        return f"{len(self.replicas)} replicas"

    def stop_router(self) -> None:
        for process in (self.gate, self.router):
            if process is not None and process.poll() is None:
                process.terminate()
        for process in (self.gate, self.router):
            if process is None:
                continue
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def probe_models(self) -> tuple[bool, str]:
        """READY through the router: one model, the same probe as a launch (/v1/models lists
        it, a 1-token completion); several (the router's gateway mode, whose /v1/models is
        its own list), a 1-token completion per model, each routed by its name."""
        if not self.plan.router.igw:
            # A longer wait than a server's own probe: the first request through a P/D
            # router also makes the NIXL handshake (each retry would add one more request).
            return probe_ready(self.router_url, self.plan.served_model_name, self.api_key,
                               timeout=30.0)
        headers = auth_headers(self.api_key)
        for model in self.plan.models:
            try:
                answer = requests.post(f"{self.router_url}/v1/completions", headers=headers,
                                       timeout=30, json={"model": model, "prompt": "ready?",
                                                         "max_tokens": 1})
                served = answer.json().get("model") if answer.ok else None
            except (requests.RequestException, ValueError, AttributeError) as exc:
                return False, f"{model}: {exc}"
            if served != model:
                return False, f"{model}: HTTP {answer.status_code}, served {served!r}"
        return True, "every model answered"

    def router_workers(self) -> list[str] | None:
        try:
            if self.plan.router.igw:
                answer = requests.get(f"{self.admin_url}/workers", timeout=3)
                return [w["url"] for w in answer.json().get("workers", [])] if answer.ok \
                    else None
            answer = requests.get(f"{self.admin_url}/list_workers", timeout=3)
            return list(answer.json().get("urls", [])) if answer.ok else None
        except (requests.RequestException, ValueError, AttributeError, KeyError, TypeError):
            return None

    def _add(self, replica: Replica) -> bool:
        url = replica.url
        if self.plan.router.pd:
            # vllm-router (0.1.17) cannot add a server to a P/D router at run time; the
            # restarted server kept its URL and the router's own health check takes it back.
            return self._healthy_in_router(url, timeout=12 * ROUTER_HEALTH_INTERVAL_S)
        try:
            if self.plan.router.igw:
                # The model named, not discovered: the router's discovery asks /v1/models
                # without a key and, with one, files the server under "unknown".
                return requests.post(f"{self.admin_url}/workers", timeout=30, json={
                    "url": url, "model_id": replica.plan.served_model_name}).ok
            return requests.post(f"{self.admin_url}/add_worker", params={"url": url},
                                 timeout=30).ok
        except requests.RequestException:
            return False

    def _healthy_in_router(self, url: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            try:
                workers = requests.get(f"{self.admin_url}/workers", timeout=3).json()["workers"]
                if any(w.get("url") == url and w.get("is_healthy") for w in workers):
                    return True
            except (requests.RequestException, ValueError, AttributeError, KeyError, TypeError):
                pass
            if time.monotonic() > deadline:
                return False
            time.sleep(1)

    def _remove(self, url: str) -> bool:
        try:
            if self.plan.router.igw:
                return requests.delete(f"{self.admin_url}/workers/{quote(url, safe='')}",
                                       timeout=10).ok
            return requests.post(f"{self.admin_url}/remove_worker", params={"url": url},
                                 timeout=10).ok
        except requests.RequestException:
            return False

    # -- supervision -----------------------------------------------------------------------
    def check_replicas(self) -> None:
        """Take a replica that died out of rotation (and restart it with --restart); raise
        when none is left to serve."""
        for replica in self.replicas:
            if replica.state != "serving":
                continue
            failed = replica.launch.failed_node()
            if not failed:
                continue
            host, code = failed
            replica.state = "dead"
            replica.deaths += 1
            # A P/D router cannot take a server back once removed (see _add): one that will be
            # restarted is left to the router's health check, which marks it down in ~15 s.
            left_listed = self.plan.router.pd and self.restart
            removed = not left_listed and self._remove(replica.url)
            reason = replica.launch.report_failure(NodeFailed(host, code, "while serving"))
            rotation = "taken out of rotation" if removed else \
                "left to the router's health check" if left_listed else \
                "the router could not be told"
            self.say(f"pyserve: {self.plan.label(replica.index)} "
                     f"({replica.url}) died: {reason}; {rotation}; "
                     f"{sum(r.state == 'serving' for r in self.replicas)} serving")
            replica.launch.shut_down("failed", code)
            if self.restart and replica.deaths <= MAX_RESTARTS:
                replica.state = "restarting"
                replica.restarting = threading.Thread(target=self._restart, args=(replica,),
                                                      daemon=True)
                replica.restarting.start()
            elif self.restart:
                self.say(f"pyserve: {self.plan.label(replica.index)} died "
                         f"{replica.deaths} times; not restarted again")
            self.record("ready")
        lost = self.lost_groups()
        if lost:
            raise PyserveError(f"{lost}; stopping")

    def lost_groups(self) -> str | None:
        """What the endpoint can no longer serve: a model (or, with P/D, a model's prefill or
        decode side) none of whose servers is serving or coming back. None while all can."""
        alive: dict[tuple[str, str], bool] = {}
        for r in self.replicas:
            key = (r.plan.served_model_name, self.plan.role(r.index))
            alive[key] = alive.get(key, False) or r.state in ("serving", "restarting")
        if not any(alive.values()):
            return "every replica has died"
        lost = [f"every {role} server of {model}" if role != "replica" else
                f"every replica of {model}" for (model, role), up in alive.items() if not up]
        return f"{' and '.join(lost)} died" if lost else None

    def _restart(self, replica: Replica) -> None:
        if self.stopping.is_set():
            return
        launch = replica.launch = self._new_launch(replica, replica.deaths)
        try:
            launch.bring_up()
        except (NodeFailed, PyserveError, OSError) as exc:
            if self.stopping.is_set():
                return  # the fleet's stop ends this launch
            self.say(f"pyserve: {self.plan.label(replica.index)} did not come "
                     f"back: {exc}")
            launch.shut_down("failed", 1)
            replica.state = "dead"
            return
        added = self._add(replica)
        replica.state = "serving"
        self.say(f"pyserve: {self.plan.label(replica.index)} restarted and "
                 f"{'back in rotation' if added else 'NOT re-added to the router'}")
        self.record("ready")

    def check_router_and_replicas(self) -> None:
        """The router and gate must live: with --restart a dead one is started again (the
        servers keep serving; clients see refused connections meanwhile), at most
        MAX_RESTARTS times; otherwise the fleet stops."""
        dead = [(name, process.returncode) for name, process in
                (("router", self.router), ("gate", self.gate))
                if process is not None and process.poll() is not None]
        if dead:
            self.router_deaths += 1
            words = " and ".join(f"the {name} (status {code})" for name, code in dead)
            if not self.restart or self.router_deaths > MAX_RESTARTS:
                again = f"; it died {self.router_deaths} times" if self.restart else ""
                raise PyserveError(f"{words} exited{again}; see {self.router_log}")
            self.say(f"pyserve: {words} exited; restarting the router "
                     f"({self.router_deaths} of {MAX_RESTARTS}), the servers serve on")
            self.stop_router()
            self.start_router()
            self.record("ready")
        self.check_replicas()

    def supervise(self) -> int:
        """Until stopped (or, with --then, until the command ends): the router must live; dead
        replicas are handled by ``check_replicas``."""
        return supervise(self.options, self.plan.endpoint, self.router_url,
                         self.plan.served_model_name, self.check_router_and_replicas,
                         self.say)

    def stop(self, state: str, code: int) -> None:
        """The router first (no new requests), then every server at once, each escalated from
        SIGTERM to SIGKILL after the grace; the record last, whatever happened."""
        self.stopping.set()
        try:
            self.stop_router()
        finally:
            def stop_one(replica: Replica) -> None:
                if replica.launch is not None:
                    replica.launch.cancelled.set()
                if replica.restarting is not None:
                    replica.restarting.join(timeout=30)
                if replica.launch is not None and replica.state != "dead":
                    replica.launch.shut_down(state, code)
                replica.state = "stopped" if replica.state != "dead" else "dead"

            threads = [threading.Thread(target=stop_one, args=(r,), daemon=True,
                                        name=f"pyserve-stop-{r.index}") for r in self.replicas]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            self.record(state, exit_status=code)

    def ready_line(self) -> str:
        return f"{self.plan.endpoint} model={','.join(self.plan.models)}"

    def finish(self, state: str, code: int) -> None:
        self.say("pyserve: stopping the router and every server")
        self.stop(state, code)

    def watch(self) -> Callable[[], None]:
        """The API's fleet: a supervisor thread takes dead replicas out (and restarts them with
        ``restart``) while the caller's block runs."""
        done = threading.Event()

        def watch() -> None:
            while not done.wait(self.options.poll_interval):
                try:
                    self.check_replicas()
                except PyserveError as exc:
                    self.say(f"pyserve: {exc}")
                    return

        watcher = threading.Thread(target=watch, name="pyserve-fleet", daemon=True)
        watcher.start()
        return done.set
