"""Check that MedLVMLib is layered: every import (module level or inside a function) points down a floor or
stays inside its own folder, no module imports itself through others, and no file is too long.

    python tools/check_layers.py            # prints the problems; exit status 1 when there are any
    python tools/check_layers.py --graph    # also prints each module's MedLVMLib imports

The floors, lowest first (a module may import from its own floor's folder and from any floor below):
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "MedLVMLib"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
#: lowest first; a name is a folder under MedLVMLib or a module in its root
FLOORS: list[tuple[str, ...]] = [
    ("", "errors", "progress", "outputs", "paths"),  # the ground floor ("" is the package's __init__)
    ("imaging",),
    ("synthetic",),
    ("engine",),
    ("baselines",),
    ("tasks",),
    ("training",),
    ("slicer",),
    ("evaluation",),
    ("commands",),
    ("api",),
    ("cli",),
    ("__main__",),
]
MAX_LINES = 450
MAX_ROOT_MODULES = 10

__doc__ += "".join(f"    {i}: {', '.join(n or '__init__' for n in names)}\n" for i, names in enumerate(FLOORS))


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """MedLVMLib modules that `name` imports anywhere in its source (lazy imports included)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" for alias in node.names] + [module]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith(PACKAGE) and target != name:
                found.add(target)
    return found


def floor_of(name: str) -> tuple[int, str]:
    """(floor index, folder or root module) of a module name."""
    rest = name[len(PACKAGE) + 1:] if name != PACKAGE else ""
    head = rest.split(".")[0]
    for i, names in enumerate(FLOORS):
        if head in names:
            return i, head
    raise KeyError(f"{name}: not on any floor; add its folder to FLOORS in {Path(__file__).name}")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def problems(root: Path = ROOT) -> list[str]:
    """Every cycle, upward import, long file and crowded root of the package at `root`, one line each."""
    known = modules(root)
    graph = {name: imports_of(name, path, known) for name, path in known.items()}
    found = [f"import cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    unplaced = set()
    for name in sorted(graph):
        try:
            floor_of(name)
        except KeyError as exc:
            unplaced.add(name)
            found.append(str(exc.args[0]))
    for name, targets in sorted(graph.items()):
        if name in unplaced:
            continue
        floor, folder = floor_of(name)
        for target in sorted(set(targets) - unplaced):
            target_floor, target_folder = floor_of(target)
            if target_floor > floor or (target_floor == floor and target_folder != folder and floor != 0):
                found.append(f"{name} imports {target}: floor {target_floor} ({target_folder}) is not below "
                             f"floor {floor} ({folder})")
    for path in known.values():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            found.append(f"{path.relative_to(root.parent)}: {n} lines (at most {MAX_LINES})")
    top = sorted(p.name for p in root.glob("*.py"))
    if len(top) > MAX_ROOT_MODULES:
        found.append(f"{len(top)} modules in the package root (at most {MAX_ROOT_MODULES}): {', '.join(top)}")
    return found


def main(argv: list[str]) -> int:
    if "--graph" in argv:
        known = modules()
        for name, path in known.items():
            print(name, "->", " ".join(sorted(imports_of(name, path, known))))
    found = problems()
    for line in found:
        print(line)
    print(f"{len(found)} problems" if found else "layers: no cycles, no upward imports, no file too long")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
