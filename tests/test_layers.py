"""The layer rules of ARCHITECTURE.md, enforced by walking every import in src/."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import agentstage

SRC = Path(agentstage.__file__).resolve().parent
SDKS = ("openai", "anthropic", "llama_cpp")
THIRD_PARTY_IN_CORE = {"pydantic", "jinja2"}  # jinja2: prompt templates are part of the core
SHARED = ("agentstage.errors", "agentstage.types")
EVALS_MAY_USE = {"evals", "runtime", "core", "errors", "types", "settings"}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. agentstage.runtime.service
    target: str  # what it imports, e.g. agentstage.store.sql
    top_level: bool
    line: int


def _imports(path: Path) -> list[Import]:
    module = "agentstage." + ".".join(path.relative_to(SRC).with_suffix("").parts)
    module = module.removesuffix(".__init__")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level_nodes = {id(node) for node in tree.body}
    found: list[Import] = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [node.module]
            targets += [f"{node.module}.{alias.name}" for alias in node.names if node.module == "agentstage"]
        else:
            continue
        for target in targets:
            found.append(Import(module, target, id(node) in top_level_nodes, node.lineno))
    return found


def all_imports() -> list[Import]:
    return [
        imp for path in sorted(SRC.rglob("*.py")) if "migrations" not in path.parts for imp in _imports(path)
    ]


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 else module


def is_stdlib(name: str) -> bool:
    import sys

    return name.split(".")[0] in sys.stdlib_module_names or name == "__future__"


def breaches(imports: list[Import] | None = None) -> list[str]:
    problems = []
    for imp in all_imports() if imports is None else imports:
        where = f"{imp.module}:{imp.line} imports {imp.target}"
        own, target = layer(imp.module), imp.target
        target_layer = layer(target) if target.startswith("agentstage.") else None
        if own == "core":
            internal_ok = target.startswith("agentstage.core") or target.startswith(SHARED)
            external_ok = not target.startswith("agentstage") and (
                is_stdlib(target) or target.split(".")[0] in THIRD_PARTY_IN_CORE
            )
            if not (internal_ok or external_ok):
                problems.append(f"core may not depend on it: {where}")
        if own in {"providers", "tools", "store", "observability", "access"} and target_layer in {
            "runtime",
            "interfaces",
        }:
            problems.append(f"{own} may not reach up: {where}")
        if own == "access" and target_layer in {"providers", "tools", "store", "observability", "settings"}:
            problems.append(f"access knows protocols, not parts: {where}")
        if own == "providers" and target.split(".")[0] in SDKS and imp.top_level:
            problems.append(f"provider SDKs load lazily, inside the provider: {where}")
        if own != "providers" and target.split(".")[0] in SDKS:
            problems.append(f"only providers use provider SDKs: {where}")
        if own == "runtime" and imp.module != "agentstage.runtime.wiring":
            concrete = target_layer in {"providers", "tools"} or target.startswith("agentstage.store.sql")
            concrete |= target_layer == "observability" and target != "agentstage.observability.masking"
            if concrete:
                problems.append(f"only runtime/wiring.py names concrete parts: {where}")
        if own == "interfaces":
            door = imp.module.split(".")[2]
            allowed = target_layer in {
                "runtime",
                "access",
                "core",
                "errors",
                "types",
                "settings",
                "interfaces",
                "evals",
            } or target in {
                "agentstage",
                "agentstage.__version__",
            }
            if target.startswith("agentstage") and not allowed:
                problems.append(f"doors call the runtime only: {where}")
            if target.startswith("agentstage.interfaces.") and target.split(".")[2] != door:
                problems.append(f"doors never import each other: {where}")
        if own == "evals" and target.startswith("agentstage"):
            # The eval harness is a client of the runtime like any door.
            allowed = target_layer in EVALS_MAY_USE or target in {"agentstage", "agentstage.__version__"}
            if not allowed:
                problems.append(f"evals is a client of the runtime only: {where}")
    return problems


def test_src_keeps_the_layer_rules() -> None:
    assert breaches() == []


def test_the_walk_sees_real_imports() -> None:
    """Guard against a walker that silently finds nothing (which would pass any rule)."""
    edges = {(imp.module, imp.target) for imp in all_imports()}
    assert ("agentstage.runtime.wiring", "agentstage.store.sql") in edges
    assert ("agentstage.core.events", "pydantic") in edges
    assert ("agentstage.interfaces.http.middleware.auth", "agentstage.access.guard") in edges
    lazy = [i for i in all_imports() if i.module == "agentstage.providers.openai" and i.target == "openai"]
    assert lazy and not any(i.top_level for i in lazy)
    assert ("agentstage.evals.harness", "agentstage.runtime.requests") in edges
    assert any(m == "agentstage.interfaces.cli.eval" and t.startswith("agentstage.evals") for m, t in edges)


def test_evals_may_use_the_runtime_but_nothing_below_or_beside_it() -> None:
    def check(target: str) -> list[str]:
        return breaches([Import("agentstage.evals.harness", target, True, 1)])

    assert check("agentstage.runtime.service") == [] and check("agentstage.core.events") == []
    for target in ("agentstage.store.sql", "agentstage.providers.local", "agentstage.interfaces.cli.run"):
        assert check(target), target
