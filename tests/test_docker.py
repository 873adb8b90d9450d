"""Static checks of the docker files: docker/Dockerfile, docker/compose.yaml and .dockerignore.

No docker engine is needed. The Dockerfile is parsed instruction by instruction (continuation
lines joined, ARG and ENV values substituted), the compose file with PyYAML (``${VAR:-default}``
resolved to its default), and every ``bev-reid`` command a service runs is parsed by the real
command line (``bev_reid.cli.build_parser``) and resolved with its config file. Where the
``docker compose`` plugin is installed, its own validation runs as well.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import InvalidRequirement, Requirement

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"
COMPOSE = REPO / "docker" / "compose.yaml"
DOCKERIGNORE = REPO / ".dockerignore"

# service -> the bev-reid sub-command it runs; all of them need a GPU.
JOBS = {
    "train-lss": "train-lss",
    "build-dataset": "build-dataset",
    "train-reid": "train-reid",
    "eval-reid": "eval-reid",
}
TENSORBOARD_PORTS = (6006, 6007)  # training logs, evaluation logs
CUDA_ARCHS = {"7.0", "7.5", "8.0", "8.6", "8.9", "9.0"}
# Config keys each job writes to (must be on a writable mount) and reads from.
WRITES = {
    "train-lss": ("train_lss.logdir",),
    "build-dataset": ("build.out",),
    "train-reid": ("reid_run.log_dir",),
    "eval-reid": ("eval_reid.eval_log_dir",),
}
READS = {
    "train-lss": ("data.dataroot",),
    "build-dataset": ("data.dataroot", "build.checkpoint"),
    "train-reid": ("reid_run.dataset_dir",),
    "eval-reid": ("reid_run.dataset_dir", "reid_run.log_dir"),
}


# ---------------------------------------------------------------------------------------------
# Dockerfile


@dataclass
class Instruction:
    keyword: str  # upper case
    args: str  # continuation lines joined, comments dropped, variables not yet substituted
    line: int
    before: dict[str, str] = field(default_factory=dict)  # ARG and ENV values in force
    after: dict[str, str] = field(default_factory=dict)  # the same, after this instruction


@dataclass
class Stage:
    image: str  # the FROM argument, substituted
    name: str | None
    parent: int | None  # index of the stage it is built FROM, if any
    instructions: list[Instruction] = field(default_factory=list)


_DOCKER_VAR = re.compile(r"\$\{(\w+)(?::([-+])([^}]*))?\}|\$(\w+)")


def substitute(text: str, values: dict[str, str]) -> str:
    """Docker's ${VAR}, $VAR, ${VAR:-default}; unknown names are left as written."""

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(4)
        if name in values:
            return values[name] if m.group(2) != "+" else m.group(3)
        if m.group(2) == "-":
            return m.group(3)
        return m.group(0)

    return _DOCKER_VAR.sub(sub, text)


def join_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, instruction text): continuation lines joined, comments dropped."""
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for no, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # also inside a continued instruction, where docker drops them too
        if not buf:
            start = no
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].strip())
            continue
        buf.append(stripped)
        out.append((start, " ".join(p for p in buf if p)))
        buf = []
    assert not buf, f"{DOCKERFILE}: the last instruction (line {start}) ends with a backslash"
    return out


def _assignments(args: str, keyword: str) -> list[tuple[str, str | None]]:
    words = shlex.split(args)
    if keyword == "ENV" and words and "=" not in words[0]:
        return [(words[0], " ".join(words[1:]))]  # legacy `ENV KEY value`
    return [(w.split("=", 1)[0], w.split("=", 1)[1] if "=" in w else None) for w in words]


def parse_dockerfile(text: str) -> list[Stage]:
    meta: dict[str, str] = {}  # ARGs before the first FROM
    stages: list[Stage] = []
    values: dict[str, str] = {}
    for line, body in join_lines(text):
        keyword, _, args = body.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            image = substitute(words[0], meta)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            parent = next((i for i, s in enumerate(stages) if s.name == image), None)
            values = {}
            if parent is not None and stages[parent].instructions:
                values = dict(stages[parent].instructions[-1].after)
            stages.append(Stage(image, name, parent))
            continue
        if not stages:
            assert keyword == "ARG", f"line {line}: only ARG may come before the first FROM"
            for k, v in _assignments(args, "ARG"):
                if v is not None:
                    meta[k] = v
            continue
        ins = Instruction(keyword, args, line, before=dict(values))
        stages[-1].instructions.append(ins)
        if keyword in ("ARG", "ENV"):
            for k, v in _assignments(args, keyword):
                if v is not None:
                    values[k] = substitute(v, values)
                elif k in meta:
                    values[k] = meta[k]  # `ARG NAME` in a stage takes the global default
        ins.after = dict(values)
    assert stages, f"{DOCKERFILE} has no FROM"
    return stages


def root_image(stages: list[Stage], i: int) -> str:
    while stages[i].parent is not None:
        i = stages[i].parent
    return stages[i].image


def lineage(stages: list[Stage], i: int) -> list[int]:
    out = [i]
    while stages[out[-1]].parent is not None:
        out.append(stages[out[-1]].parent)
    return out


@dataclass
class PipInstall:
    stage: int
    instruction: Instruction
    env: dict[str, str]  # the stage's ARG/ENV values plus inline `VAR=value pip ...`
    options: dict[str, str | bool]
    targets: list[str]  # positional arguments: requirements or paths


_PIP_VALUE_OPTIONS = {
    "--index-url", "-i", "--extra-index-url", "--find-links", "-f", "-r", "--requirement",
    "-c", "--constraint", "-e", "--editable", "-t", "--target", "--prefix", "--root",
}  # fmt: skip


def _shell_commands(script: str) -> list[list[str]]:
    lex = shlex.shlex(script, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    commands, current = [], []
    for token in lex:
        if token and all(c in "();<>|&" for c in token):
            if current:
                commands.append(current)
            current = []
        else:
            current.append(token)
    if current:
        commands.append(current)
    return commands


def pip_installs(stages: list[Stage]) -> list[PipInstall]:
    found = []
    for si, stage in enumerate(stages):
        for ins in stage.instructions:
            if ins.keyword != "RUN" or "pip" not in ins.args:
                continue
            script = ins.args
            while script.startswith("--"):  # --mount=..., --network=...
                script = script.split(None, 1)[1] if " " in script else ""
            script = substitute(script, ins.before)
            for words in _shell_commands(script):
                env = dict(ins.before)
                while words and re.fullmatch(r"\w+=.*", words[0]):
                    k, v = words.pop(0).split("=", 1)
                    env[k] = v
                program = posixpath.basename(words[0]) if words else ""
                if program in ("pip", "pip3"):
                    rest = words[1:]
                elif program.startswith("python") and words[1:3] == ["-m", "pip"]:
                    rest = words[3:]
                else:
                    continue
                if rest[:1] != ["install"]:
                    continue
                options: dict[str, str | bool] = {}
                targets: list[str] = []
                it = iter(rest[1:])
                for w in it:
                    if w.startswith("--") and "=" in w:
                        k, v = w.split("=", 1)
                        options[k] = v
                    elif w in _PIP_VALUE_OPTIONS:
                        options[w] = next(it, "")
                    elif w.startswith("-"):
                        options[w] = True
                    else:
                        targets.append(w)
                found.append(PipInstall(si, ins, env, options, targets))
    return found


def requirements(install: PipInstall) -> list[Requirement]:
    out = []
    for t in install.targets:
        if t.startswith((".", "/")) or t.endswith(".whl"):
            continue
        try:
            out.append(Requirement(t))
        except InvalidRequirement:
            continue
    return out


def package_install(stages: list[Stage]) -> PipInstall:
    """The `pip install ... .` of this repository (`-e .` included, to be refused)."""
    here = (".", "./")
    found = [
        p
        for p in pip_installs(stages)
        if any(t in here for t in p.targets)
        or any(p.options.get(e) in here for e in ("-e", "--editable"))
    ]
    assert len(found) == 1, (
        f"{DOCKERFILE} must install the repository once with `pip install --no-build-isolation .`"
        f" (found {len(found)} `pip install .`)"
    )
    return found[0]


def copy_sources(ins: Instruction) -> list[str]:
    args = substitute(ins.args, ins.before)
    if args.startswith("["):
        words = json.loads(args)
    else:
        words = shlex.split(args)
    words = [w for w in words if not w.startswith("--")]
    return words[:-1]


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def readme_torch_version() -> str:
    versions = set(re.findall(r"torch==([0-9][\w.+]*)", (REPO / "README.md").read_text()))
    assert len(versions) == 1, f"README.md should install one torch version, found {versions}"
    return versions.pop()


def setup_install_requires() -> list[Requirement]:
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            return [Requirement(r) for r in ast.literal_eval(node.value)]
    raise AssertionError("setup.py has no install_requires")


def test_package_is_built_on_a_cuda_devel_image(stages):
    install = package_install(stages)
    image = root_image(stages, install.stage)
    assert re.fullmatch(
        r"(docker\.io/)?nvidia/cuda:\d+\.\d+(\.\d+)?-(cudnn\d*-)?devel-ubuntu\d+\.\d+", image
    ), f"the stage that builds the ops must be FROM an nvidia/cuda *-devel image, not {image!r}"


def test_ops_are_built_for_sm70_to_sm90_with_ptx(stages):
    install = package_install(stages)
    assert install.env.get("FORCE_CUDA") == "1", (
        "`pip install .` must run with FORCE_CUDA=1 (there is no GPU during docker build)"
    )
    arch_list = install.env.get("TORCH_CUDA_ARCH_LIST", "")
    entries = [a for a in re.split(r"[;\s]+", arch_list) if a]
    archs = {a.removesuffix("+PTX") for a in entries}
    assert CUDA_ARCHS <= archs, (
        f"TORCH_CUDA_ARCH_LIST={arch_list!r} lacks {sorted(CUDA_ARCHS - archs)}"
    )
    assert any(a.endswith("+PTX") for a in entries), f"no +PTX in {arch_list!r}"
    assert "--no-build-isolation" in install.options, (
        "`pip install .` needs --no-build-isolation, to build against the torch installed first"
    )
    assert not {"-e", "--editable"} & set(install.options), (
        "an editable install points into the build stage's source tree"
    )


def test_torch_is_the_readme_version_from_the_matching_cuda_index(stages):
    install = package_install(stages)
    want = readme_torch_version()
    cuda = re.search(r"nvidia/cuda:(\d+)\.(\d+)", root_image(stages, install.stage))
    assert cuda, "no CUDA version in the build stage's base image"
    for p in pip_installs(stages):
        pins = [r for r in requirements(p) if r.name == "torch"]
        if not pins:
            continue
        assert str(pins[0].specifier) == f"=={want}", (
            f"line {p.instruction.line}: torch must be pinned to {want} (README), got {pins[0]}"
        )
        assert p.stage in lineage(stages, install.stage), "torch is installed in another stage"
        assert p.instruction.line < install.instruction.line, "torch must come before the package"
        index = str(p.options.get("--index-url") or p.options.get("-i") or "")
        m = re.fullmatch(r"https://download\.pytorch\.org/whl/cu(\d+)/?", index)
        assert m, f"torch must come from PyTorch's CUDA wheel index (--index-url), got {index!r}"
        assert m.group(1) == cuda.group(1) + cuda.group(2), (
            f"the torch index {index} does not match the base image's CUDA "
            f"{cuda.group(1)}.{cuda.group(2)}"
        )
        return
    pytest.fail(f"{DOCKERFILE} installs no pinned torch")


def test_numpy_and_opencv_stay_below_their_limits(stages):
    limits = {"numpy": "2.0.0", "opencv-python": "4.12.0", "opencv-python-headless": "4.12.0"}
    for p in pip_installs(stages):
        for r in requirements(p):
            if r.name in limits:
                assert not r.specifier.contains(limits[r.name], prereleases=True), (
                    f"line {p.instruction.line}: {r} allows {r.name} {limits[r.name]}"
                )
    reqs = {r.name: r for r in setup_install_requires()}
    for name in ("numpy", "opencv-python"):
        assert name in reqs, f"setup.py's install_requires should pin {name}"
        assert not reqs[name].specifier.contains(limits[name], prereleases=True), (
            f"setup.py's {reqs[name]} allows {name} {limits[name]}"
        )


def test_final_image_runs_bev_reid_as_a_user(stages):
    final = stages[-1]
    chain = [stages[i] for i in lineage(stages, len(stages) - 1)]
    by_kw = {}
    for st in reversed(chain):  # later instructions override earlier ones
        for ins in st.instructions:
            by_kw[ins.keyword] = ins
    ep = by_kw.get("ENTRYPOINT") or by_kw.get("CMD")
    assert ep is not None, "the image has no ENTRYPOINT or CMD"
    assert ep.args.startswith("["), 'use the exec form: ENTRYPOINT ["bev-reid"]'
    assert json.loads(ep.args)[0] == "bev-reid", f"the image runs {ep.args}, not bev-reid"
    assert re.search(r"['\"]bev-reid=", (REPO / "setup.py").read_text()), "no bev-reid script"
    user = by_kw.get("USER")
    assert user and user.args.split(":")[0] not in ("root", "0"), "the image must not run as root"
    assert by_kw.get("WORKDIR") and by_kw["WORKDIR"].args == "/workspace"
    volumes = [i for st in chain for i in st.instructions if i.keyword == "VOLUME"]
    assert any("/runs" in v.args for v in volumes), "/runs should be a VOLUME"
    # The package must reach the final image: built there, or copied from the build stage.
    install = package_install(stages)
    if install.stage not in lineage(stages, len(stages) - 1):
        name = stages[install.stage].name or str(install.stage)
        venv = install.env.get("VIRTUAL_ENV") or install.env.get("PATH", "").split(":")[0]
        copies = [
            i
            for st in chain
            for i in st.instructions
            if i.keyword == "COPY" and re.search(rf"--from={re.escape(name)}\b", i.args)
        ]
        assert any(venv.startswith(copy_sources(c)[0].rstrip("/")) for c in copies), (
            f"the final stage ({final.image}) does not copy the environment ({venv}) that "
            f"stage {name!r} installed the package into"
        )


# ---------------------------------------------------------------------------------------------
# .dockerignore


def _glob_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    rules = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = posixpath.normpath(line.lstrip("!").strip().strip("/"))
        rules.append((negate, _glob_regex(pattern)))
    return rules


def in_context(relpath: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Docker's rule: a pattern matches a path or a parent folder of it; the last match wins."""
    parts = relpath.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, rx in rules:
        if any(rx.match(p) for p in prefixes):
            excluded = not negate
    return not excluded


def test_copy_sources_exist_and_reach_the_build_context(stages):
    rules = dockerignore_rules()
    for st in stages:
        for ins in st.instructions:
            if ins.keyword not in ("COPY", "ADD") or "--from=" in ins.args:
                continue
            for src in copy_sources(ins):
                matches = sorted(REPO.glob(src.strip("/") or "."))
                assert matches, f"line {ins.line}: COPY source {src!r} does not exist in the repo"
                for path in matches:
                    rel = path.relative_to(REPO).as_posix()
                    files = [path] if path.is_file() else list(path.rglob("*"))
                    sent = [f for f in files if in_context(f.relative_to(REPO).as_posix(), rules)]
                    assert in_context(rel, rules) and sent, (
                        f"line {ins.line}: COPY source {rel!r} is excluded by .dockerignore"
                    )


def test_dockerignore_keeps_local_state_out():
    rules = dockerignore_rules()
    for rel in ("bev_reid/cli.py", "csrc/bev_pool/bev_pool_cuda.cu", "setup.py", "README.md"):
        assert in_context(rel, rules), f"{rel} must be in the build context"
    local = (
        ".venv/bin/python",
        "runs/lss/x.json",
        "data/nuscenes/samples/a.jpg",
        "bev_reid/_C.so",
        "bev_reid/__pycache__/cli.cpython-311.pyc",
        "build/lib/x.o",
    )
    for rel in local:
        assert not in_context(rel, rules), f"{rel} must not be sent to the docker daemon"


# ---------------------------------------------------------------------------------------------
# compose.yaml

_COMPOSE_VAR = re.compile(r"\$\$|\$\{(\w+)(?::?-([^}]*))?\}|\$(\w+)")


def compose_default(text: Any) -> str:
    """Compose interpolation with every variable unset: ${VAR:-default} becomes default."""
    text = str(text)

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        if m.group(2) is None:
            name = m.group(1) or m.group(3)
            raise AssertionError(f"${name} in {text!r} has no default: write ${{{name}:-...}}")
        return m.group(2)

    out = _COMPOSE_VAR.sub(sub, text)
    assert "${" not in out, f"cannot resolve {text!r}"
    return out


@pytest.fixture(scope="module")
def compose() -> dict:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), "no services"
    return data


def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


def _words(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(compose_default(value))
    return [compose_default(v) for v in value]


def service_argv(svc: dict, stages: list[Stage]) -> list[str]:
    """What the container runs: entrypoint + command, with the image's as defaults."""
    chain = [stages[i] for i in lineage(stages, len(stages) - 1)]
    image = {i.keyword: json.loads(i.args) for st in reversed(chain) for i in st.instructions
             if i.keyword in ("ENTRYPOINT", "CMD") and i.args.startswith("[")}  # fmt: skip
    if "entrypoint" in svc:
        entry, cmd = _words(svc["entrypoint"]), []  # an entrypoint override drops the image CMD
    else:
        entry, cmd = image.get("ENTRYPOINT", []), image.get("CMD", [])
    if "command" in svc:
        cmd = _words(svc["command"])
    return entry + cmd


def bev_reid_args(argv: list[str]) -> list[str] | None:
    if argv and posixpath.basename(argv[0]) == "bev-reid":
        return argv[1:]
    if (
        argv
        and posixpath.basename(argv[0]).startswith("python")
        and argv[1:3] == ["-m", "bev_reid"]
    ):
        return argv[3:]
    return None


@dataclass
class Mount:
    source: str  # host path (absolute) or volume name
    target: str
    read_only: bool
    named: bool


def mounts(svc: dict, compose: dict) -> list[Mount]:
    named = set((compose.get("volumes") or {}).keys())
    out = []
    for v in svc.get("volumes") or []:
        if isinstance(v, dict):
            src, target = compose_default(v.get("source", "")), v["target"]
            ro = bool(v.get("read_only"))
        else:
            parts = compose_default(v).split(":")
            src, target = parts[0], parts[1] if len(parts) > 1 else parts[0]
            ro = len(parts) > 2 and "ro" in parts[2].split(",")
        is_named = src in named
        if not is_named:
            src = os.path.normpath(os.path.join(COMPOSE.parent, src))
        out.append(Mount(src, target, ro, is_named))
    return out


def in_container(path: str, stages: list[Stage]) -> str:
    """``path`` made absolute against the image's WORKDIR."""
    workdirs = [i.args for i in stages[-1].instructions if i.keyword == "WORKDIR"]
    return posixpath.normpath(posixpath.join(workdirs[-1] if workdirs else "/", path))


def container_path(svc: dict, compose: dict, path: str, stages: list[Stage]) -> Mount | None:
    """The mount that holds ``path`` inside the container."""
    path = in_container(path, stages)
    best = None
    for m in mounts(svc, compose):
        t = m.target.rstrip("/")
        if path == t or path.startswith(t + "/"):
            if best is None or len(t) > len(best.target):
                best = m
    return best


def host_path(svc: dict, compose: dict, path: str, stages: list[Stage]) -> str:
    m = container_path(svc, compose, path, stages)
    assert m is not None, f"{path} is not on any volume of the service"
    rest = posixpath.relpath(in_container(path, stages), m.target)
    return os.path.normpath(os.path.join(m.source, rest))


def parse_bev_reid(args: list[str]):
    from bev_reid.cli import build_parser

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            return build_parser().parse_args(args)
        except SystemExit:
            pass
    lines = err.getvalue().strip().splitlines() or ["(no message)"]
    pytest.fail(f"`bev-reid {shlex.join(args)}` does not parse: {lines[-1]}")


def job_config(name: str, compose: dict, stages: list[Stage]):
    """The parsed arguments and the resolved config of a job, its --config read from the repo."""
    from bev_reid.cli import resolve_config
    from bev_reid.config import ConfigError

    svc = services(compose).get(name)
    assert svc is not None, f"compose.yaml has no service {name!r}"
    args = bev_reid_args(service_argv(svc, stages))
    assert args is not None, f"service {name} does not run bev-reid"
    ns = parse_bev_reid(args)
    if ns.config:
        ns.config = host_path(svc, compose, ns.config, stages)
    try:
        return svc, ns, resolve_config(ns)
    except ConfigError as e:
        pytest.fail(f"service {name}: {e}")


def config_value(cfg: Any, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def test_required_services_exist(compose):
    missing = sorted(set(JOBS) - set(services(compose)))
    assert not missing, f"compose.yaml lacks {missing}"


def test_gpu_jobs_reserve_nvidia_gpus(compose):
    for name in JOBS:
        svc = services(compose)[name]
        devices = (
            svc.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        )
        assert any(
            d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices
        ), f"{name} reserves no nvidia GPU (deploy.resources.reservations.devices)"


def test_jobs_and_tensorboards_share_the_run_folder(compose):
    names = list(JOBS) + [n for n in services(compose) if n.startswith("tensorboard")]
    sources = {}
    for name in names:
        runs = [m for m in mounts(services(compose)[name], compose) if m.target == "/runs"]
        assert runs, f"{name} does not mount the run folder at /runs"
        sources[name] = runs[0].source
    assert len(set(sources.values())) == 1, f"services mount different run folders: {sources}"


def test_host_paths_are_variables_with_defaults(compose):
    named = set((compose.get("volumes") or {}).keys())
    for name, svc in services(compose).items():
        for v in svc.get("volumes") or []:
            src = str(v.get("source", "")) if isinstance(v, dict) else str(v)
            if src.split(":")[0] in named:
                continue
            assert re.match(r"\$\{\w+:-[^}]+\}", src), (
                f"{name}: host path in {v!r} should be a variable with a default, "
                "e.g. ${NUSCENES:-../data/nuscenes}"
            )


@pytest.mark.parametrize("port", TENSORBOARD_PORTS)
def test_tensorboard_serves_its_port(compose, stages, port):
    for name, svc in services(compose).items():
        if not name.startswith("tensorboard"):
            continue
        for p in svc.get("ports") or []:
            if isinstance(p, dict):
                host, target = str(p.get("published")), str(p["target"])
            else:
                parts = compose_default(p).split(":")
                host, target = parts[-2] if len(parts) > 1 else "", parts[-1].split("/")[0]
            if host != str(port):
                continue
            argv = service_argv(svc, stages)
            assert argv and posixpath.basename(argv[0]) == "tensorboard", f"{name} runs {argv}"
            assert argv[argv.index("--port") + 1] == target, f"{name}: --port != {target}"
            assert "--bind_all" in argv or "0.0.0.0" in argv, f"{name} listens on localhost only"
            logdir = argv[argv.index("--logdir") + 1]
            assert container_path(svc, compose, logdir, stages), f"{name}: {logdir} not mounted"
            return
    pytest.fail(f"no tensorboard* service publishes port {port}")


def test_pipeline_order(compose):
    svcs = services(compose)
    for name, after in (("build-dataset", "train-lss"), ("train-reid", "build-dataset")):
        dep = svcs[name].get("depends_on") or {}
        cond = dep.get(after, {}).get("condition") if isinstance(dep, dict) else None
        assert cond == "service_completed_successfully", (
            f"{name} should start after {after} completes (depends_on condition)"
        )
    assert svcs["eval-reid"].get("restart") == "unless-stopped", "the watcher should restart"
    argv = _words(svcs["eval-reid"].get("command"))
    assert "--once" not in argv, "eval-reid is the watcher: no --once"


def test_services_build_this_repository(compose):
    images = set()
    for name, svc in services(compose).items():
        build = svc.get("build")
        assert isinstance(build, dict), f"{name} has no build section"
        context = Path(os.path.normpath(COMPOSE.parent / compose_default(build["context"])))
        assert context == REPO, f"{name} builds from {context}, not the repository root"
        assert (context / compose_default(build["dockerfile"])).resolve() == DOCKERFILE
        images.add(compose_default(svc.get("image", "")))
    assert len(images) == 1, f"services should share one image, got {images}"


@pytest.mark.parametrize("name", list(JOBS))
def test_job_command_parses_and_resolves(compose, stages, name):
    svc, ns, cfg = job_config(name, compose, stages)
    assert ns.command == JOBS[name], f"service {name} runs `bev-reid {ns.command}`"
    for key in WRITES[name] + READS[name]:
        value = config_value(cfg, key)
        m = container_path(svc, compose, value, stages)
        assert m is not None, f"{name}: {key}={value!r} is not on a volume (it would be lost)"
        if key in WRITES[name]:
            assert not m.read_only, f"{name}: {key}={value!r} is on a read-only volume"


def test_dataset_is_built_from_the_lss_run(compose, stages):
    lss_svc, _, lss = job_config("train-lss", compose, stages)
    build_svc, _, build = job_config("build-dataset", compose, stages)
    logdir = host_path(lss_svc, compose, lss.train_lss.logdir, stages)
    ckpt = host_path(build_svc, compose, build.build.checkpoint, stages)
    assert ckpt == logdir or ckpt.startswith(logdir + os.sep), (
        f"build-dataset reads checkpoints from {ckpt}, train-lss writes them under {logdir}"
    )


def test_reid_jobs_share_dataset_and_run(compose, stages):
    build_svc, _, build = job_config("build-dataset", compose, stages)
    out = host_path(build_svc, compose, build.build.out, stages)
    runs = {}
    for name in ("train-reid", "eval-reid"):
        svc, _, cfg = job_config(name, compose, stages)
        ds = host_path(svc, compose, cfg.reid_run.dataset_dir, stages)
        assert ds == out, f"{name} reads the dataset at {ds}, build-dataset writes {out}"
        runs[name] = (host_path(svc, compose, cfg.reid_run.log_dir, stages), cfg.reid_run.run_id)
    assert runs["train-reid"] == runs["eval-reid"], f"eval-reid watches another run: {runs}"


def test_tensorboards_see_the_logs(compose, stages):
    logdirs = {}
    for name, svc in services(compose).items():
        argv = service_argv(svc, stages)
        if name.startswith("tensorboard") and "--logdir" in argv:
            port = int(argv[argv.index("--port") + 1])
            logdirs[port] = host_path(svc, compose, argv[argv.index("--logdir") + 1], stages)
    train, evaluation = (logdirs.get(p) for p in TENSORBOARD_PORTS)
    assert train and evaluation, f"tensorboards on {TENSORBOARD_PORTS} needed, got {logdirs}"
    written = {
        ("train-lss", "train_lss.logdir"): train,
        ("train-reid", "reid_run.log_dir"): train,
        ("eval-reid", "eval_reid.eval_log_dir"): evaluation,
    }
    for (name, key), tb in written.items():
        svc, _, cfg = job_config(name, compose, stages)
        path = host_path(svc, compose, config_value(cfg, key), stages)
        assert path == tb or path.startswith(tb + os.sep), (
            f"{name} logs to {path}, outside the tensorboard folder {tb}"
        )


def test_docker_compose_validates():
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed")
    try:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"`docker compose version` failed: {e}")
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    r = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, f"docker compose config: {r.stderr or r.stdout}"


def test_compose_variables_are_documented():
    names = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text(encoding="utf-8")))
    readme = (REPO / "docker" / "README.md").read_text(encoding="utf-8")
    missing = sorted(n for n in names if f"`{n}`" not in readme)
    assert not missing, f"docker/README.md does not document {missing}"
