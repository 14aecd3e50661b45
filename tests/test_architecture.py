"""The layout keeps its promises: no import cycles (module-level or inside functions), each layer imports only the
layers beneath it, the HTTP functions load without NumPy, Pillow or a model runtime, and no test hook lives in
production code."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PRODUCTION = ["common", "imgclassify", "functions"]
# What each layer may import from the project (besides itself). Only the composition root (common.bootstrap) sees
# the adapters; the entry points (functions, the CLI) reach use cases through it.
ENTRY = {"common.bootstrap", "common.config", "common.domain", "common.http", "common.logs", "common.pages",
         "common.pubsub", "common.routes"}
ALLOWED = {
    "common.domain": {"common.domain"},
    "common.logs": set(),
    "common.config": {"common.domain"},
    "common.ports": {"common.domain"},
    "common.routes": {"common.domain"},
    "common.inference": {"common.domain", "common.inference", "common.logs", "common.ports"},
    "common.usecases": {"common.domain", "common.ports", "common.logs", "common.usecases"},
    "common.pages": {"common.domain"},
    "common.adapters": {"common.domain", "common.logs", "common.ports", "common.adapters"},
    "common.http": {"common.domain", "common.config", "common.logs", "common.routes", "common.pages"},
    "common.pubsub": {"common.domain", "common.logs"},
    # The infrastructure declared once (deploy.sh and the emulated stack read it): the route table's functions.
    "common.infrastructure": {"common.domain", "common.routes"},
    "functions": ENTRY,
    "imgclassify.cli": ENTRY | {"imgclassify.cli", "imgclassify.emulation", "imgclassify.local_stack",
                                "imgclassify.http_server",
                                "imgclassify.litert_build", "imgclassify.weights", "imgclassify.detector_build"},
    "imgclassify.emulation": {"common.domain"},
    "imgclassify.local_stack": {"common.domain", "common.http", "common.routes", "common.adapters.gcp",
                                "common.pages", "common.infrastructure",
                                "imgclassify.emulation"},  # clients; the gateway's front page; what is deployed
    "imgclassify.http_server": {"common.logs"},
    "imgclassify.weights": {"common.domain", "common.inference"},
    "imgclassify.litert_build": {"common.domain", "common.inference", "common.logs"},
    "imgclassify.detector_build": {"common.domain", "imgclassify.litert_build"},
    "imgclassify.gateway_config": {"common.domain", "common.routes"},  # deploy.sh's API Gateway config
    "imgclassify.deploy_json": set(),  # deploy.sh's readers of gcloud's JSON
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_production_module_belongs_to_a_layer():
    unplaced = [name for name in project_modules() if layer_of(name) is None and name not in ("common", "imgclassify")
                and not name.startswith("common.bootstrap")]  # the composition root sees everything
    assert unplaced == []


def test_the_cli_never_touches_an_adapter_or_a_model_runtime():
    reached = {f"{m} -> {t}" for m, ts in graph().items() if m.startswith("imgclassify.cli") for t in ts
               if t.startswith(("common.adapters", "common.inference", "common.usecases"))}
    assert reached == set()


def test_no_module_is_longer_than_400_lines():
    long = {name: n for name, path in project_modules().items() if (n := len(path.read_text().splitlines())) > 400}
    assert long == {}


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PRODUCTION for p in (REPO_ROOT / package).rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every project module this file imports, at module level or inside functions (TYPE_CHECKING excluded)."""
    tree = ast.parse(path.read_text())
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only |= {id(child) for stmt in node.body for child in ast.walk(stmt)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from common import bootstrap` imports the module common.bootstrap, not the package's contents
            submodules = [f"{node.module}.{alias.name}" for alias in node.names
                          if f"{node.module}.{alias.name}" in known]
            names = submodules if len(submodules) == len(node.names) else [node.module, *submodules]
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {name: imports_of(path, known) - {name} for name, path in modules.items()}


def test_no_import_cycles_anywhere():
    edges = graph()
    # Packages import nothing themselves here (their __init__ is documentation), so a package name as a target
    # stands for the package, not a cycle through its children.
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def layer_of(module: str) -> str | None:
    return next((layer for layer in sorted(ALLOWED, key=len, reverse=True)
                 if module == layer or module.startswith(layer + ".")), None)


def test_each_layer_imports_only_what_is_beneath_it():
    violations = []
    for module, targets in graph().items():
        layer = layer_of(module)
        if layer is None:
            continue
        for target in targets:
            if not any(target == allowed or target.startswith(allowed + ".") for allowed in ALLOWED[layer] | {layer}):
                violations.append(f"{module} -> {target}")
    assert violations == []


def test_common_never_imports_the_local_tooling():
    assert [f"{m} -> {t}" for m, ts in graph().items() if m.startswith("common") for t in ts
            if t.startswith("imgclassify")] == []


@pytest.mark.parametrize("function", ["create_job", "job_status"])
def test_http_functions_load_without_numpy_pillow_or_a_model_runtime(function):
    script = f"""
import sys
from functions_framework import create_app
create_app("{function}", "functions/{function}/main.py", "http")
heavy = sorted(m for m in ("numpy", "PIL", "tensorflow", "keras", "ai_edge_litert") if m in sys.modules)
print(",".join(heavy))
"""
    loaded = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == ""


def test_no_production_module_refers_to_crash_points_or_test_hooks():
    sources = [p for package in ("common", "functions") for p in (REPO_ROOT / package).rglob("*.py")]
    hooks = re.compile(r"\b(crash_point|IMGCLASSIFY_CRASH\w*|faults|use_service|OBSERVE_DIR)\b")
    offenders = [str(p.relative_to(REPO_ROOT)) for p in sources if hooks.search(p.read_text())]
    assert offenders == []


def test_deploy_stages_common_whole_with_no_deny_list():
    script = (REPO_ROOT / "deploy.sh").read_text()
    assert 'cp -r "$HERE/common"' in script and 'rm -f "$STAGE' not in script


def _defaulted_collaborators(source: str) -> list[str]:
    """Each use case's constructor parameter that has a default other than a number (a tuning constant): a
    collaborator that a test could leave out and production never does."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        for function in node.body:
            if not isinstance(function, ast.FunctionDef) or function.name != "__init__":
                continue
            positional = function.args.args[len(function.args.args) - len(function.args.defaults):]
            pairs = [*zip(positional, function.args.defaults), *zip(function.args.kwonlyargs,
                                                                    function.args.kw_defaults)]
            found += [f"{node.name}.{arg.arg}" for arg, default in pairs if default is not None and not (
                isinstance(default, ast.Constant) and type(default.value) in (int, float))]
    return found


def test_use_cases_take_every_collaborator_without_a_default():
    offenders = [f"{p.name}: {name}" for p in sorted((REPO_ROOT / "common/usecases").glob("*.py"))
                 for name in _defaulted_collaborators(p.read_text())]
    assert offenders == []
    assert _defaulted_collaborators("class A:\n    def __init__(self, a, b=None, *, c=print, d=4): ...") == [
        "A.b", "A.c"]  # the check itself finds what it is for


def test_the_composition_root_looks_nothing_up_by_name_and_returns_nothing_untyped():
    """Ports and use cases are typed attributes: no getattr/port(name) lookup, no `-> Any` in the bootstrap."""
    offenders = []
    for path in sorted((REPO_ROOT / "common/bootstrap").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr",
                                                                                                     "setattr"):
                offenders.append(f"{path.name}:{node.lineno} {node.func.id}")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None and \
                    "Any" in ast.unparse(node.returns):
                offenders.append(f"{path.name}:{node.lineno} {node.name} -> {ast.unparse(node.returns)}")
            if isinstance(node, ast.arg) and node.annotation is not None and ast.unparse(node.annotation) == "Any":
                offenders.append(f"{path.name}:{node.lineno} {node.arg}: Any")
    assert offenders == []
