"""The architecture as declared: import-linter's contracts hold, and the import graph has no
cycle, function-level imports counted (docs/architecture.md, "Layers").

Both checks are shown to notice a break: an import added on purpose against a contract, and
an edge added on purpose to the graph, each fail.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("mipro_bench", "task_app")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(),
                                reason="import-linter is not installed (extra 'dev')")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, text=True,
                          capture_output=True, env={"PYTHONPATH": str(root),
                                                    "PATH": str(LINT_IMPORTS.parent)},
                          timeout=300)


def cycles(graph: grimp.ImportGraph) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    modules = set(graph.modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    counter = 0
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root) & modules)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(component)
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(
                    graph.find_modules_directly_imported_by(child) & modules))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_import_contracts_hold() -> None:
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_a_core_module_importing_the_offline_package_breaks_a_contract(tmp_path: Path) -> None:
    for name in PACKAGES:
        shutil.copytree(REPO / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    client = tmp_path / "mipro_bench" / "lm" / "client.py"
    client.write_text(client.read_text() + "\n\ndef _sneak() -> None:\n"
                      "    from mipro_bench.offline import sim_responder  # noqa: F401\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0
    assert "mipro_bench.lm.client -> mipro_bench.offline.sim_responder" in done.stdout


def test_no_import_cycle_counting_function_level_imports() -> None:
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    assert cycles(graph) == []


def test_the_cycle_check_notices_a_cycle() -> None:
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    # The cycle issue 19 measured began here: data's CLI reading the option defaults.
    graph.add_import(importer="mipro_bench.data", imported="mipro_bench.options")
    (component,) = cycles(graph)
    assert {"mipro_bench.data", "mipro_bench.options"} <= component
