"""Print the import graph of utilise_cli (module -> the package modules it imports, at the top or inside
functions) and exit non-zero when two modules reach each other (a circle)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "utilise_cli"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("utilise_cli"):
                candidates = [f"{target}.{a.name}" for a in node.names] + [target]
                found.add(next(c for c in candidates if c in MODULES))
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in MODULES}
    found.discard(name)
    return found


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}


def main() -> int:
    graph = {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}

    def reach(start: str) -> set[str]:
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += graph.get(m, ())
        return seen

    circles = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a] if a in reach(b)})
    for name, deps in sorted(graph.items()):
        print(f"{name:34s} -> {', '.join(sorted(d.removeprefix('utilise_cli.') for d in deps)) or '-'}")
    for a, b in circles:
        print(f"CIRCLE: {a} <-> {b}")
    print(f"{len(graph)} modules, {len(circles)} circles")
    return 1 if circles else 0


if __name__ == "__main__":
    sys.exit(main())
