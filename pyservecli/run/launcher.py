"""Execute a launch plan: render entrypoints, start every node, wait for READY, supervise, stop.

Runs on the launching host; talks to nodes only through the processes it started (a local session
or one srun step) and the files they write in the workspace.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pyservecli.errors import PyserveError
from pyservecli.plan.backends import get_backend
from pyservecli.plan.launch import LaunchPlan
from pyservecli.plan.ports import job_window
from pyservecli.run.jobfiles import (
    HEARTBEAT_INTERVAL_S,
    JobFiles,
    bin_dir,
    write_job_files,
    write_record,
)
from pyservecli.run.procs import NodeProcess, srun_per_node, start_local, start_srun
from pyservecli.run.prometheus import remove_targets, sd_path, server_group, write_targets
from pyservecli.run.readiness import (
    API_STARTING,
    LogFollower,
    PhaseTracker,
    last_error,
    probe_ready,
)
from pyservecli.run.render import shjoin
from pyservecli.run.runtimes import get_runtime

if TYPE_CHECKING:
    from pyservecli.run.container import ContainerSpec


class StopRequested(Exception):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class LaunchOptions:
    workspace: Path
    api_key_file: Path | None = None
    ready_timeout: float = 1800.0
    then: list[str] | None = None
    stop_grace: float = 60.0
    poll_interval: float = 0.25
    container: ContainerSpec | None = None  # --image launches
    cache_dir: Path | None = None  # compile caches' base (per vLLM version and GPU); None: off
    # Whether the launch's record is also the workspace's latest.json (a fleet's replicas leave
    # that file to the fleet's own record).
    workspace_record: bool = True


def check_can_launch(plan: LaunchPlan, options: LaunchOptions) -> None:
    """Everything that would make the launch fail, found before any process starts."""
    if not plan.in_slurm:
        if plan.topology.nodes > 1:
            raise PyserveError(
                f"a {plan.topology.nodes}-node plan needs a SLURM allocation (salloc/sbatch); "
                "outside SLURM pyserve launches on this host only (use --dry-run to inspect it)"
            )
        import socket

        if plan.head_host not in (socket.gethostname(), "localhost"):
            raise PyserveError(
                f"--nodelist {plan.head_host} is not this host; outside SLURM pyserve launches "
                "here only (use --dry-run to inspect a plan for other hosts)"
            )
    elif shutil.which("srun") is None:
        raise PyserveError("inside a SLURM job but `srun` is not on PATH")
    if options.container is not None:
        # vLLM and Ray come from the image; the host needs the runtime (checked here for local
        # launches; each node's entrypoint checks its own).
        runtime = get_runtime(options.container.runtime)
        if runtime.needs_slurm and not plan.in_slurm:
            raise PyserveError(f"--runtime {runtime.name} starts containers through srun: "
                               "launch inside a SLURM allocation (salloc/sbatch)")
        if not plan.in_slurm and shutil.which(runtime.tool) is None:
            raise PyserveError(f"--image with --runtime {runtime.name} needs `{runtime.tool}` "
                               "on this host (not found on PATH)")
        tools = set()
    else:
        tools = set(get_backend(plan.topology.backend).tools)
    search_path = bin_dir() + os.pathsep + os.environ.get("PATH", "")
    for tool in sorted(tools):
        if shutil.which(tool, path=search_path) is None:
            raise PyserveError(
                f"`{tool}` is not installed where pyserve runs; install the engine "
                "(pip install 'pyserve[engine]', or scripts/setup-cpu-engine.sh on CPU machines)"
            )
    if options.then and shutil.which(options.then[0]) is None:
        raise PyserveError(f"--then: command {options.then[0]!r} not found")


MAX_KEY_CHARS = 4096


def read_api_key(path: Path) -> str:
    """The key in ``path`` without surrounding whitespace (node scripts read it the same way).
    A missing, unreadable or empty key file is refused: a server must never start open."""
    try:
        key = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise PyserveError(f"cannot read --api-key-file {path}: "
                           f"{getattr(exc, 'strerror', None) or exc}") from None
    if not key:
        raise PyserveError(f"--api-key-file {path} is empty; the server would run without a key")
    # It travels as `Authorization: Bearer KEY`: a second line, a space or a control character
    # would break the header (or be cut at it), and servers refuse headers past a few KiB.
    if len(key) > MAX_KEY_CHARS or not all(c.isascii() and c.isprintable() and not c.isspace()
                                           for c in key):
        raise PyserveError(f"--api-key-file {path}: the key must be one word of printable "
                           f"ASCII characters (no spaces, at most {MAX_KEY_CHARS}); it is sent "
                           "in an HTTP Authorization header")
    return key


def check_head_ports(plan: LaunchPlan) -> LaunchPlan:
    """Ask the head node itself which ports of the job's window (and the API port) are taken
    (one short srun step). The API port taken: refused, naming it. Internal ports taken (two
    launches in one allocation, or job ids whose windows meet): the plan is made again with
    the head's free ports, and returned."""
    window = job_window(plan.job_id)
    asked = sorted({plan.ports.api, *window})
    argv = ["srun", "--nodes=1", "--ntasks=1", f"--nodelist={plan.head_host}", "--overlap",
            sys.executable, "-m", "pyservecli.workers.portcheck", *map(str, asked)]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise PyserveError(f"checking ports on {plan.head_host} took over 120 s") from None
    if result.returncode not in (0, 3):
        raise PyserveError(f"could not check ports on {plan.head_host}: "
                           f"{(result.stderr or result.stdout).strip()[-300:]}")
    busy = {int(p) for p in result.stdout.split() if p.isdigit()}
    if plan.ports.api in busy:
        raise PyserveError(f"port {plan.ports.api} is already in use on {plan.head_host}; "
                           "choose another --port")
    if not {plan.ports.dp_rpc, plan.ports.master, plan.ports.ray} & busy:
        return plan
    from pyservecli.run.cluster import resolve_ip

    return plan.with_free_ports(lambda port: port not in busy, resolve_ip)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log written)"


class Runner:
    """What ``pyserve launch`` runs: one server (``Launch``) or servers behind a router
    (``run.fleet.Fleet``). Both go through the same ``run()`` (the CLI) and ``serving()`` (the
    Python API): signals, bring-up, READY, supervise, stop; each says how it does those."""

    say: Callable[[str], None]

    def bring_up(self) -> None:
        """Start everything and wait for READY (raises NodeFailed, PyserveError)."""
        raise NotImplementedError

    def ready_line(self) -> str:
        """What follows READY on stdout: the endpoint and the model(s)."""
        raise NotImplementedError

    def supervise(self) -> int:
        """Serve until stopped or until --then's command ends (its status)."""
        raise NotImplementedError

    def finish(self, state: str, code: int) -> None:
        """Stop everything started and write the final record, whatever happened."""
        raise NotImplementedError

    def report_failure(self, failure: NodeFailed) -> str:
        self.say(f"pyserve: {failure}")
        return str(failure)

    def watch(self) -> Callable[[], None] | None:
        """For ``serving()``: start watching what serves in the background; returns how to
        stop watching (None: nothing to watch)."""
        return None

    def run(self) -> int:
        """The CLI's launch: READY, then serve (or run --then) until stopped; the exit status.
        A failure before READY reaches the caller (the CLI's one error line)."""
        code, state, ready = 1, "failed", False
        with _stop_on_signals():
            try:
                self.bring_up()
                ready = True
                print(f"READY {self.ready_line()}", flush=True)
                code = self.supervise()
                state = "finished"
            except StopRequested as stop:
                self.say(f"pyserve: {stop} received")
                code, state = 0, "stopped"
            except NodeFailed as failure:
                self.report_failure(failure)
            except PyserveError as exc:
                if not ready:
                    raise
                self.say(f"pyserve: {exc}")
            finally:
                shield_stop()
                self.finish(state, code)
        return code

    @contextmanager
    def serving(self) -> Iterator[Runner]:
        """The Python API's launch: READY on entry, everything stopped on leaving the block.

        A server that ends before READY raises PyserveError with its cause. SIGTERM/SIGHUP
        during the block (from the main thread) stop it, then reach the caller as
        StopRequested; Ctrl+C as KeyboardInterrupt does the same."""
        state, code = "failed", 1
        with _stop_on_signals(interrupt=False):
            try:
                try:
                    self.bring_up()
                except NodeFailed as failure:
                    raise PyserveError(self.failure_message(failure)) from None
                stop_watching = self.watch()
                try:
                    yield self
                finally:
                    if stop_watching is not None:
                        stop_watching()
                state, code = "finished", 0
            except (StopRequested, KeyboardInterrupt) as stop:
                self.say(f"pyserve: {type(stop).__name__} {stop} received".rstrip())
                state, code = "stopped", 0
                raise
            finally:
                shield_stop(interrupt=False)
                self.finish(state, code)

    def failure_message(self, failure: NodeFailed) -> str:
        return self.report_failure(failure)


class Launch(Runner):
    """One running launch. ``run()`` returns the process exit status."""

    def __init__(self, plan: LaunchPlan, options: LaunchOptions,
                 say: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)):
        self.plan = plan
        self.options = options
        self.say = say
        self.files: JobFiles | None = None
        self.process: NodeProcess | None = None
        # Unreadable or empty: refused here, before anything starts.
        self.api_key = read_api_key(options.api_key_file) if options.api_key_file else None
        self.heartbeat: Heartbeat | None = None
        self.trackers: dict[str, PhaseTracker] = {}
        self.followers: dict[str, LogFollower] | None = None  # per node, from the first read
        self.last_note = 0.0  # when a phase or a "still ..." note was last said
        self.startup: dict[str, dict] = {}  # the startup ledger per node (launch.json)
        self.t0 = time.monotonic()
        self.times: dict[str, float] = {}
        # Set by a fleet that stops while this launch is (re)starting: it starts nothing more.
        self.cancelled = threading.Event()

    # -- helpers ---------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def probe_url(self) -> str:
        host = "127.0.0.1" if not self.plan.in_slurm else self.plan.head_ip
        return f"http://{host}:{self.plan.ports.api}"

    def failed_node(self) -> tuple[str, int] | None:
        """(host, exit status) of the node whose entrypoint ended first (a dead worker often
        takes the head down with it; the first to go is the one to name)."""
        ended = []
        for node in self.plan.nodes:
            exit_file = self.files.exit_file(node.host)
            try:
                ended.append((exit_file.stat().st_mtime_ns, node.host, exit_file.read_text()))
            except OSError:
                continue
        if ended:
            _, host, text = min(ended)
            text = text.strip()
            return host, int(text) if text.lstrip("-").isdigit() else -1
        code = self.process.poll()
        if code is not None:
            return (self.plan.nodes[0].host if self.process.local_session else "srun"), code
        return None

    def report_failure(self, failure: NodeFailed) -> str:
        """Say which node ended and why (its log's last lines, the cause found there); returns
        the one-line reason."""
        host = failure.host
        log = self.files.log(host) if host != "srun" else self.process.log_path
        reason = f"node {host} exited with status {failure.code} {failure.when}"
        self.say(f"pyserve: {reason}")
        self.say(f"--- last lines of {log} ---\n{tail(log)}\n---")
        cause = last_error(tail(log, 200).splitlines())
        if cause:
            self.say(f"pyserve: cause on {host}: {cause}")
            return f"{reason}: {cause}"
        return reason

    def container_step_options(self) -> list[str]:
        """Options of the srun step for a runtime whose step is itself the container (pyxis),
        after the image's one-time preparation on the head node; [] for the others."""
        spec = self.options.container
        if spec is None:
            return []
        runtime = get_runtime(spec.runtime)
        prepare = runtime.prepare_argv(spec, self.options.workspace)
        if prepare:
            self.say(f"pyserve: preparing image {spec.tag} for {runtime.name} on "
                     f"{self.plan.head_host}")
            done = subprocess.run([*srun_per_node([self.plan.head_host]), *prepare],
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True)
            if done.returncode != 0:
                lines = (done.stderr or done.stdout).strip().splitlines()
                raise PyserveError(f"--runtime {runtime.name}: could not prepare {spec.tag}: "
                                   f"{lines[-1] if lines else f'exit status {done.returncode}'}")
        return runtime.srun_options(self.files.containers[0])

    # -- phases ----------------------------------------------------------------------------
    def start(self) -> None:
        if self.cancelled.is_set():
            raise PyserveError("stopped before it started")
        check_can_launch(self.plan, self.options)
        if self.plan.in_slurm:
            self.plan = check_head_ports(self.plan)
        self.files = write_job_files(self.plan, self.options)
        self.heartbeat = Heartbeat(self.files.heartbeat)
        t = self.plan.topology
        self.say(f"pyserve: launch {self.plan.launch_id}: {t.nodes} node(s), TP {t.tp} PP {t.pp} "
                 f"DP {t.dp} (local {t.dp_local}) EP {t.ep}, backend {t.backend}; "
                 f"logs in {self.files.log_dir}")
        for line in self.plan.notes:
            self.say(f"pyserve: {line}")
        for line in self.plan.warnings:
            self.say(f"pyserve: warning: {line}")
        if self.plan.in_slurm:
            self.process = start_srun(self.files.dispatch, [n.host for n in self.plan.nodes],
                                      self.files.log_dir, self.container_step_options())
        else:
            node = self.plan.nodes[0]
            self.process = start_local(node.host, self.files.node_scripts[0],
                                       self.files.log(node.host))
            self.process.leader_first = self.plan.stop_signal != "TERM"
        write_record(self.plan, self.files, self.options, state="starting",
                     started_at=time.time())

    def follow_phases(self) -> None:
        """Read what every node logged since the last call: the startup ledger of each, and the
        head's phases said as they happen. ``wait_ready`` calls it; so does a fleet, for the
        servers it is not waiting on yet, so that their phases are said live too."""
        if self.followers is None:
            self.followers = {n.host: LogFollower(self.files.log(n.host))
                              for n in self.plan.nodes}
            self.trackers = {host: PhaseTracker() for host in self.followers}
        tracker = self.trackers[self.plan.head_host]
        for host, follower in self.followers.items():
            node_tracker = self.trackers[host]
            for line in follower.new_lines():
                was_complete = node_tracker.startup_complete_seen
                phase = node_tracker.feed(line, self.elapsed())
                if host != self.plan.head_host:
                    continue
                if tracker.startup_complete_seen and not was_complete:
                    self.times["startup_complete_seen_s"] = self.elapsed()
                if phase:
                    self.say(f"[{self.elapsed():7.1f}s] {phase}")
                    self.last_note = self.elapsed()

    def wait_ready(self, meanwhile: Callable[[], None] | None = None) -> None:
        """Until the server answers (raises NodeFailed, PyserveError); ``meanwhile`` is called
        at every poll (a fleet follows its other servers' phases there)."""
        self.follow_phases()
        tracker = self.trackers[self.plan.head_host]
        last_probe = 0.0
        why = "not probed yet"
        while True:
            self.follow_phases()
            if meanwhile is not None:
                meanwhile()
            failed = self.failed_node()
            if failed:
                raise NodeFailed(*failed, "before READY")
            if self.cancelled.is_set():
                raise PyserveError("stopped while starting")
            now = self.elapsed()
            if now > self.options.ready_timeout:
                raise PyserveError(f"not READY after {self.options.ready_timeout:.0f}s "
                                   f"(last phase: {tracker.phase}; last probe: {why}); see "
                                   f"{self.files.log_dir}")
            # Probe often once the API server is starting; otherwise once a second is enough.
            interval = self.options.poll_interval if tracker.reached(API_STARTING) else 1.0
            if now - last_probe >= interval:
                last_probe = now
                ok, why = probe_ready(self.probe_url(), self.plan.served_model_name,
                                       self.api_key, timeout=2.0)
                if ok:
                    self.times["ready_s"] = self.elapsed()
                    return
            if now - self.last_note >= 30:
                self.say(f"[{now:7.1f}s] still {tracker.phase}")
                self.last_note = now
            time.sleep(self.options.poll_interval)

    def check_nodes(self) -> None:
        """Raise NodeFailed when a node has ended."""
        failed = self.failed_node()
        if failed:
            raise NodeFailed(*failed, "while serving")

    def supervise(self) -> int:
        return supervise(self.options, self.plan.endpoint, self.probe_url(),
                         self.plan.served_model_name, self.check_nodes, self.say)

    def stop(self) -> None:
        if self.process is None:
            return
        self.say("pyserve: stopping every rank")
        self.process.stop(self.options.stop_grace)
        if self.heartbeat is not None:
            self.heartbeat.stop()
        left = self.process.leftovers()
        if left:
            self.say(f"pyserve: warning: processes {left} outlived the stop")
        if self.options.container is not None and not self.plan.in_slurm:
            # Each node's entrypoint removes its container; this catches one whose entrypoint
            # was killed. By this job's label only.
            runtime = get_runtime(self.options.container.runtime)
            for name in runtime.remove_job_containers(self.plan.launch_id):
                self.say(f"pyserve: removed leftover container {name}")

    def bring_up(self) -> None:
        """Start every node and wait for READY (raises NodeFailed, PyserveError)."""
        self.start()
        self.wait_ready()
        ready = self.times["ready_s"]
        seen = self.times.get("startup_complete_seen_s")
        delay = f", {ready - seen:.2f}s after vLLM's startup message" if seen else ""
        self.say(f"pyserve: READY in {ready:.1f}s{delay}")
        self.startup = {host: t.ledger() for host, t in self.trackers.items()}
        cache = {entry["compile_cache"] for entry in self.startup.values()} - {None}
        why = sorted({entry["compile_cache_why"] for entry in self.startup.values()
                      if entry.get("compile_cache_why")})
        if cache:
            self.say(f"pyserve: compile cache {'/'.join(sorted(cache))}"
                     + (f" ({'; '.join(why)})" if why else ""))
        write_record(self.plan, self.files, self.options, state="ready",
                     ready_at=time.time(), startup=self.startup, **self.times)
        if self.options.workspace_record:  # a fleet's servers are listed in the fleet's file
            write_targets(self.targets_file, [server_group(
                self.plan, launch_id=self.plan.launch_id, role="server")])

    @property
    def targets_file(self) -> Path:
        """Prometheus' file_sd list of this launch while it serves (run/prometheus)."""
        return sd_path(self.options.workspace, self.plan.launch_id)

    def shut_down(self, state: str, code: int) -> None:
        remove_targets(self.targets_file)  # nothing to scrape from here on
        try:
            self.stop()
        finally:
            if self.files is not None:
                write_record(self.plan, self.files, self.options, state=state,
                             exit_status=code, ended_at=time.time(), startup=self.startup,
                             **self.times)

    def ready_line(self) -> str:
        return f"{self.plan.endpoint} model={self.plan.served_model_name}"

    def finish(self, state: str, code: int) -> None:
        self.shut_down(state, code)

    def failure_message(self, failure: NodeFailed) -> str:
        return (f"launch of {self.plan.model} failed: {self.report_failure(failure)}; logs in "
                f"{self.files.log_dir}")


def supervise(options: LaunchOptions, endpoint: str, base_url: str, model: str,
              check: Callable[[], None], say: Callable[[str], None]) -> int:
    """Serve until stopped, or with ``options.then`` until that command ends (its status is
    returned); ``check`` raises when what serves has failed, and the command is ended then."""
    if not options.then:
        while True:
            check()
            time.sleep(options.poll_interval)
    # PYSERVE_WORKSPACE lets `pyserve bench` in COMMAND find this launch's record (server
    # command and topology go into its provenance).
    env = {**os.environ, "PYSERVE_ENDPOINT": endpoint, "PYSERVE_BASE_URL": base_url,
           "PYSERVE_MODEL": model, "PYSERVE_WORKSPACE": str(options.workspace)}
    say(f"pyserve: running {shjoin(options.then)}")
    child = subprocess.Popen(options.then, env=env)
    try:
        while child.poll() is None:
            check()
            time.sleep(options.poll_interval)
    finally:
        if child.poll() is None:
            child.terminate()
            child.wait()
    say(f"pyserve: command exited with status {child.returncode}; stopping")
    return child.returncode


class Heartbeat:
    """Touches the launch's heartbeat file every HEARTBEAT_INTERVAL_S from a thread, so node
    entrypoints can tell that this launcher is alive (a SIGKILLed launcher stops touching it,
    and the nodes stop their servers; see node.sh.j2)."""

    def __init__(self, path: Path):
        self.path = path
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="pyserve-heartbeat", daemon=True)
        self.thread.start()

    def _beat(self) -> None:
        while not self.done.wait(HEARTBEAT_INTERVAL_S):
            try:
                os.utime(self.path)
            except OSError:
                self.path.touch()

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=5)


class NodeFailed(Exception):
    def __init__(self, host: str, code: int, when: str):
        super().__init__(f"{host} exited {code} {when}")
        self.host, self.code, self.when = host, code, when


def _raise_stop(signum, _frame):
    # Ignore further signals while stopping; a second Ctrl+C must not abandon the cleanup.
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    raise StopRequested(signum)


def shield_stop(interrupt: bool = True) -> None:
    """From here the stop runs to its end: SIGTERM, SIGHUP and SIGINT are ignored until the
    handlers in force before ``_stop_on_signals`` come back (a signal during the cleanup of a
    failed launch used to abandon it, leaving servers running). Main thread only."""
    if threading.current_thread() is threading.main_thread():
        for s in [signal.SIGTERM, signal.SIGHUP] + ([signal.SIGINT] if interrupt else []):
            signal.signal(s, signal.SIG_IGN)


@contextmanager
def _stop_on_signals(interrupt: bool = True) -> Iterator[None]:
    """SIGTERM and SIGHUP (and SIGINT when ``interrupt``) raise StopRequested while inside, so
    that the stop runs; the previous handlers come back on leaving. Only the main thread can
    set handlers: elsewhere this does nothing (the caller's own handling applies)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = [signal.SIGTERM, signal.SIGHUP] + ([signal.SIGINT] if interrupt else [])
    previous = {s: signal.signal(s, _raise_stop) for s in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
