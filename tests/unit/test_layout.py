"""The import graph keeps the design's layering (DESIGN.md, "Layout"): no cycles between
modules, verify sits above the neutral wire module and never imports attest, only tboot_py.tpm
imports tpm2_pytss, and no stage imports another stage's private module."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PKG = REPO / "tboot_py"


def _module(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every tboot_py module or third-party module ``path`` imports, at any depth."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def graph() -> dict[str, set[str]]:
    mods = {_module(p): p for p in PKG.rglob("*.py")}
    g: dict[str, set[str]] = {}
    for name, path in mods.items():
        g[name] = {i for i in _imports(path) if i in mods and i != name}
    return g


def _stage(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) >= 2 else mod


def _is_stage(mod: str) -> bool:
    """Stages are the subpackages; modules directly under tboot_py (errors, algorithms, the
    CLI and output helpers) are shared by all."""
    return (PKG / _stage(mod)).is_dir()


def test_no_import_cycles() -> None:
    """Between modules (a package importing its own submodules lazily is not a cycle; the
    command-line shell above every stage, tboot_py._cli and its generators, is left out), and
    between stages."""
    shell = {"tboot_py._cli", "tboot_py._docs", "tboot_py.__main__"}
    g = {m: {d for d in deps if not d.startswith(m + ".") and d not in shell}
         for m, deps in graph().items() if m not in shell}
    _acyclic(g)
    stages: dict[str, set[str]] = {}
    for m, deps in graph().items():
        if _is_stage(m) and not m.endswith(("._cli", "._bench")):
            stages.setdefault(_stage(m), set()).update(
                _stage(d) for d in deps if _is_stage(d) and _stage(d) != _stage(m))
    _acyclic(stages)


def _acyclic(g: dict[str, set[str]]) -> None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(m):], m]))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n)


def test_verify_sits_above_the_wire_module() -> None:
    g = graph()
    for mod, deps in g.items():
        if mod.startswith("tboot_py.verify"):
            assert not any(d.startswith("tboot_py.attest") for d in deps), (mod, deps)
    assert "tboot_py.tpm.wire" in g["tboot_py.verify.quote"]
    assert "tboot_py.tpm.wire" in g["tboot_py.attest.keys"]


def test_only_tpm_imports_tpm2_pytss() -> None:
    for p in PKG.rglob("*.py"):
        if any(i.startswith("tpm2_pytss") for i in _imports(p)):
            assert _module(p).startswith("tboot_py.tpm."), p


def test_no_stage_imports_another_stages_private_module() -> None:
    for mod, deps in graph().items():
        for d in deps:
            last = d.rsplit(".", 1)[-1]
            private = last.startswith("_") and last != "__init__"
            if private and _is_stage(d) and _stage(d) != _stage(mod) and not mod.endswith(("._cli", "._bench")) \
                    and _is_stage(mod):
                raise AssertionError(f"{mod} imports another stage's private module {d}")
