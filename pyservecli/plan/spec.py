"""``LaunchSpec``: the one description of a launch, from the command line (or the Python API) to
the launcher. Pure.

Each setting is declared once, as a field of one of the groups below, with what the command line
needs to know about it in the field's metadata (``opt``): its flag, help and kind. From that one
declaration come

- the ``pyserve launch`` option (``cli.serve`` builds the click options from ``FIELDS``), which
  ``pyserve sweep --serve '...'`` lines parse with as well;
- the Python API keyword of the same name (``api.launch(model, tp=2)``; ``from_settings``);
- the way back to a command line (``to_argv``), e.g. for an sbatch line or a sweep's record.

Adding a launch option is one field here plus its use where the plan or the launcher needs it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pyservecli.errors import PyserveError

DEFAULT_PORT = 8000
DEFAULT_READY_TIMEOUT_S = 1800.0
ROUTER_POLICIES = ("round_robin", "power_of_two", "cache_aware", "random", "consistent_hash")
BACKENDS = ("single", "rpc", "mp", "ray")


def opt(flag: str | None, help: str, kind: str = "str", **more: Any) -> dict:
    """A field's command-line declaration. ``kind``: int, float, str, path, dir, flag,
    bool_pair (--x/--no-x), choice, pairs (KEY=VALUE, repeatable), multiple, command (one
    string, split like a shell), negated_flag (``flag`` sets False), optional_value (a flag
    with an optional value: "" when given bare), serve (--serve lines), args (the trailing
    vLLM arguments), argument (the positional MODEL). ``serve_line``: may be set in a --serve
    line (per model) rather than once for the launch."""
    return {"opt": {"flag": flag, "help": help, "kind": kind, **more}}


@dataclass(frozen=True)
class ServeLine:
    """One model of a several-model fleet (``--serve 'MODEL [OPTIONS]'``)."""

    model: str
    tp: int | None = None
    pp: int | None = None
    dp: int | None = None
    ep: bool | None = None
    backend: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    vllm_args: tuple[str, ...] = ()
    replicas: int = 1
    gpus: int | None = None  # its share of the allocation; None: equal shares

    def to_line(self) -> str:
        argv = [self.model, *flags_of(self, ("tp", "pp", "dp", "ep", "backend", "env"))]
        if self.replicas != 1:
            argv += ["--replicas", str(self.replicas)]
        if self.gpus is not None:
            argv += ["--gpus", str(self.gpus)]
        return shlex.join([*argv, *self.vllm_args])


@dataclass(frozen=True)
class ModelSettings:
    model: str | None = field(default=None, metadata=opt(None, "", "argument"))
    vllm_args: tuple[str, ...] = field(default=(), metadata=opt(
        None, "", "args", serve_line=True))
    env: dict[str, str] = field(default_factory=dict, metadata=opt(
        "--env", "Environment variable for every node (repeatable); {node_rank} in VALUE "
        "becomes each node's rank.", "pairs", metavar="KEY=VALUE", serve_line=True))
    gpu_memory: str | float | None = field(default=None, metadata=opt(
        "--gpu-memory", "Memory per GPU to size the model for (80, 141GiB) [default: "
        "nvidia-smi, else SLURM's GPU type, else an 80 GB H100's 79.6 assumed].",
        metavar="GIB"))


@dataclass(frozen=True)
class TopologySettings:
    tp: int | None = field(default=None, metadata=opt(
        "--tp", "Tensor-parallel size (also -tp / --tensor-parallel-size).", "int",
        serve_line=True))
    pp: int | None = field(default=None, metadata=opt(
        "--pp", "Pipeline-parallel size; selects the mp backend.", "int", serve_line=True))
    dp: int | None = field(default=None, metadata=opt(
        "--dp", "Data-parallel size [default: all GPUs / (TP x PP)].", "int", serve_line=True))
    ep: bool | None = field(default=None, metadata=opt(
        "--ep", "Expert parallelism (EP = DP x TP).", "bool_pair", serve_line=True))
    backend: str | None = field(default=None, metadata=opt(
        "--backend", "How ranks are started across nodes [default: from the topology].",
        "choice", choices=BACKENDS, serve_line=True))
    port: int = field(default=DEFAULT_PORT, metadata=opt(
        "--port", "API server port.", "int", show_default=True))
    nodelist: str | None = field(default=None, metadata=opt(
        "--nodelist", "Plan for these hosts (SLURM hostlist syntax) instead of the "
        "allocation's."))
    gpus_per_node: int | None = field(default=None, metadata=opt(
        "--gpus-per-node", "Override GPU detection.", "int"))


@dataclass(frozen=True)
class FleetSettings:
    replicas: int | None = field(default=None, metadata=opt(
        "--replicas", "Serve N independent replicas over equal shares of the allocation "
        "behind vllm-router on --port (each replica: the usual topology of its share).", "int"))
    router_policy: str = field(default="round_robin", metadata=opt(
        "--router-policy", "With a fleet (--replicas, --serve, --prefill/--decode): how the "
        "router picks a server among those of the requested model (and role).", "choice",
        choices=ROUTER_POLICIES, show_default=True))
    router_host: str | None = field(default=None, metadata=opt(
        "--router-host", "With a fleet: the interface of the public port [default: every "
        "interface]; the router's management API is on 127.0.0.1 only, whatever this says.",
        metavar="ADDRESS"))
    restart: bool = field(default=False, metadata=opt(
        "--restart", "With --replicas, --serve or --prefill/--decode: restart a server that "
        "dies, at most 3 times (it is taken out of rotation either way).", "flag"))
    serve: tuple[ServeLine, ...] = field(default=(), metadata=opt(
        "--serve", "Several models behind one router endpoint, one --serve each (instead of "
        "MODEL): its --tp/--pp/--dp/--ep, --replicas N, --gpus N (its share; default equal), "
        "--env and vLLM flags.", "serve", metavar="'MODEL [OPTIONS]'"))
    prefill: int | None = field(default=None, metadata=opt(
        "--prefill", "Disaggregated serving: N prefill servers (with --decode M), KV cache "
        "moved over NIXL, the router in P/D mode.", "int", metavar="N"))
    decode: int | None = field(default=None, metadata=opt(
        "--decode", "With --prefill: M decode servers.", "int", metavar="M"))
    prefill_tp: int | None = field(default=None, metadata=opt(
        "--prefill-tp", "TP of each prefill server [default: an equal share of the "
        "allocation, topology as usual].", "int"))
    decode_tp: int | None = field(default=None, metadata=opt(
        "--decode-tp", "TP of each decode server.", "int"))


@dataclass(frozen=True)
class ContainerSettings:
    image: str | None = field(default=None, metadata=opt(
        "--image", "Run every node's server in this image: a `docker save` tarball (loaded or "
        "converted where missing), a registry reference, or a file the runtime runs as is "
        "(apptainer .sif, enroot .sqsh).", metavar="TARBALL|REF|FILE"))
    runtime: str | None = field(default=None, metadata=opt(
        "--runtime", "With --image: the container runtime [default: docker]; pyxis runs the "
        "srun step itself in the container (needs an allocation).", "choice",
        choices="container runtimes"))
    container_mounts: tuple[str, ...] = field(default=(), metadata=opt(
        "--container-mount", "Extra bind mount for --image (repeatable); the workspace and a "
        "local model directory are mounted already.", "multiple", metavar="DIR[:DEST]"))
    force: bool = field(default=False, metadata=opt(
        "--force", "With --image: reload the image even if present (only a pyserve-labelled "
        "image is replaced).", "flag"))
    privileged: bool = field(default=False, metadata=opt(
        "--privileged", "With --image: run privileged containers (off by default; GPUs and "
        "EFA/IB devices are passed through without it).", "flag"))


@dataclass(frozen=True)
class ProfilingSettings:
    nsys: bool = field(default=False, metadata=opt(
        "--nsys", "Run each node's `vllm serve` under `nsys profile` (capture range: "
        "cudaProfilerApi); one report per node in WORKSPACE/nsys.", "flag"))
    profile_dir: str | None = field(default=None, metadata=opt(
        "--profile", "vLLM's torch profiler, traces into DIR [default: WORKSPACE/profiles]; "
        "capture with `pyserve bench --profile`.", "optional_value", metavar="[DIR]"))


@dataclass(frozen=True)
class RunSettings:
    workspace: Path | None = field(default=None, metadata=opt(
        "--workspace", "Where logs, rendered scripts and launch records go.", "workspace"))
    api_key_file: Path | None = field(default=None, metadata=opt(
        "--api-key-file", "File holding the API key; it reaches vLLM as VLLM_API_KEY, never "
        "in argv.", "path"))
    ready_timeout: float = field(default=DEFAULT_READY_TIMEOUT_S, metadata=opt(
        "--ready-timeout", "Seconds to wait for READY.", "float", show_default=True))
    then: tuple[str, ...] | None = field(default=None, metadata=opt(
        "--then", "Run COMMAND (one command, no shell) once READY (env: PYSERVE_ENDPOINT, "
        "PYSERVE_BASE_URL, PYSERVE_MODEL, PYSERVE_WORKSPACE), then stop the server and exit "
        "with its status.",
        "command", metavar="COMMAND"))
    cache_dir: Path | None = field(default=None, metadata=opt(
        "--cache-dir", "Base of vLLM's compile caches, one per vLLM version and GPU type, "
        "shared by every node and later launch [default: WORKSPACE/cache].", "dir"))
    compile_cache: bool = field(default=True, metadata=opt(
        "--no-cache", "Leave vLLM's compile cache where vLLM puts it (each node's home).",
        "negated_flag"))
    perf_db: Path | None = field(default=None, metadata=opt(
        "--perf-db", "The performance store whose measurements can overrule the automatic "
        "choice [default: $PYSERVE_PERF_DB, else WORKSPACE/perf.db].", "path"))


# In the order of `pyserve launch --help`.
GROUPS = {"topology": TopologySettings, "model": ModelSettings, "fleet": FleetSettings,
          "container": ContainerSettings, "profiling": ProfilingSettings, "run": RunSettings}


@dataclass(frozen=True)
class LaunchSpec:
    model: ModelSettings = field(default_factory=ModelSettings)
    topology: TopologySettings = field(default_factory=TopologySettings)
    fleet: FleetSettings = field(default_factory=FleetSettings)
    container: ContainerSettings = field(default_factory=ContainerSettings)
    profiling: ProfilingSettings = field(default_factory=ProfilingSettings)
    run: RunSettings = field(default_factory=RunSettings)

    @classmethod
    def from_settings(cls, **settings: Any) -> LaunchSpec:
        """A spec from the flat keywords of the Python API (the field names); an unknown
        keyword is a TypeError, as for any function."""
        unknown = set(settings) - set(FIELDS)
        if unknown:
            raise TypeError(f"unexpected launch setting(s): {', '.join(sorted(unknown))}")
        groups = {name: {} for name in GROUPS}
        for name, value in settings.items():
            groups[FIELDS[name][0]][name] = normalise(name, value)
        return cls(**{name: GROUPS[name](**values) for name, values in groups.items()})

    def replace(self, **settings: Any) -> LaunchSpec:
        """This spec with some settings changed (flat keywords, as ``from_settings``)."""
        return LaunchSpec.from_settings(**{**self.settings(), **settings})

    def settings(self) -> dict[str, Any]:
        """The flat keywords this spec was made from (every field)."""
        return {name: getattr(getattr(self, group), name) for name, (group, _) in FIELDS.items()}

    def to_argv(self) -> list[str]:
        """``pyserve launch`` arguments that give this spec back (the workspace excepted when
        it is the default)."""
        argv = [self.model.model] if self.model.model else []
        for group in GROUPS:
            argv += flags_of(getattr(self, group))
        return argv + list(self.model.vllm_args)


def normalise(name: str, value: Any) -> Any:
    """Settings as the spec holds them: tuples for sequences, dicts for env, ServeLines."""
    if name in ("vllm_args", "container_mounts") and value is not None:
        return tuple(value)
    if name == "then" and value is not None:
        return tuple(value)
    if name == "env":
        return dict(value or {})
    if name == "serve":
        return tuple(line if isinstance(line, ServeLine) else serve_line_from_dict(line)
                     for line in (value or ()))
    if name in ("workspace", "api_key_file", "cache_dir", "perf_db") and value is not None:
        return Path(value)
    return value


def serve_line_extras(tokens: list[str], line: str) -> tuple[list[str], dict[str, Any]]:
    """A --serve line's own options, which no launch has: ``--replicas N`` and ``--gpus N``
    (its share); returns the other tokens (the launch's options, for the CLI's parser) and
    those two."""
    from pyservecli.plan.fleet import MAX_REPLICAS

    extra: dict[str, Any] = {"replicas": 1, "gpus": None}
    kept = []
    index = 0
    while index < len(tokens):
        flag, _, inline = tokens[index].partition("=")
        if flag in ("--replicas", "--gpus"):
            value = inline or (tokens[index + 1] if index + 1 < len(tokens) else "")
            if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_REPLICAS:
                raise PyserveError(f"--serve {line!r}: {flag} needs a whole number from 1 to "
                                   f"{MAX_REPLICAS}")
            extra[flag[2:]] = int(value)
            index += 1 if inline else 2
            continue
        kept.append(tokens[index])
        index += 1
    return kept, extra


def serve_line_from_dict(line: dict) -> ServeLine:
    """A --serve line given to the Python API as a dict (``model`` and any ServeLine field)."""
    allowed = {f.name for f in fields(ServeLine)}
    unknown = set(line) - allowed
    if unknown or "model" not in line:
        raise PyserveError(f"serve line {line!r}: give model and any of "
                           f"{', '.join(sorted(allowed - {'model'}))}")
    return ServeLine(**{**line, "env": dict(line.get("env") or {}),
                        "vllm_args": tuple(line.get("vllm_args") or ())})


def flags_of(settings: Any, only: tuple[str, ...] | None = None) -> list[str]:
    """The command-line flags that give back the non-default values of a group."""
    argv: list[str] = []
    for f in fields(settings):
        if only is not None and f.name not in only:
            continue
        value = getattr(settings, f.name)
        spec = (f.metadata or FIELD_META.get(f.name, {})).get("opt")
        default = f.default_factory() if callable(f.default_factory) else f.default
        if spec is None or value == default:
            continue
        kind, flag = spec["kind"], spec["flag"]
        if kind in ("argument", "args"):
            continue  # placed by to_argv: MODEL first, vLLM's arguments last
        if kind in ("flag", "negated_flag"):
            argv.append(flag)
        elif kind == "bool_pair":
            argv.append(flag if value else f"--no-{flag[2:]}")
        elif kind == "pairs":
            for key, item in value.items():
                argv += [flag, f"{key}={item}"]
        elif kind == "multiple":
            for item in value:
                argv += [flag, str(item)]
        elif kind == "command":
            argv += [flag, shlex.join(value)]
        elif kind == "serve":
            for line in value:
                argv += [flag, line.to_line()]
        elif kind == "optional_value":
            argv += [f"{flag}={value}"] if value else [flag]
        else:
            argv += [flag, str(value)]
    return argv


# ServeLine's fields carry no metadata of their own: they are the launch's, read from here.
FIELD_META = {f.name: f.metadata for group in (ModelSettings, TopologySettings)
              for f in fields(group)}
# Every setting: name -> (group, its command-line declaration), in the order declared.
FIELDS: dict[str, tuple[str, dict]] = {
    f.name: (group, f.metadata["opt"]) for group, cls in GROUPS.items() for f in fields(cls)}

