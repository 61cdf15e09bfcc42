"""The package's layers (docs/architecture.md): no module imports from a layer above its own."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "buildbox"
#: Top to bottom; a part of the package may import from its own layer's parts only when they
#: are the same part, and from any layer below.
LAYERS = (
    ("tasks",),
    ("release", "resolve", "bump"),
    ("output",),
    ("sbom",),
    ("verify",),
    ("build",),
    ("fetch", "compat"),
    ("define",),
    ("oci", "local_registry"),
    ("settings", "source", "http"),
    ("yamlsafe",),
    ("errors", "files", "digests", "lazy_jsonschema"),
)
LEVEL = {part: level for level, parts in enumerate(LAYERS) for part in parts}


def part_of(module: str) -> str | None:
    """``buildbox.oci.push`` -> ``oci``; the package itself and its data -> None."""
    names = module.split(".")
    return names[1] if len(names) > 1 and names[0] == "buildbox" else None


def imports(source: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "buildbox":
                found += [f"buildbox.{alias.name}" for alias in node.names]
            else:
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return [name for name in found if name.startswith("buildbox.")]


def upward_imports() -> list[str]:
    wrong = []
    for source in sorted(PACKAGE.rglob("*.py")):
        parts = source.relative_to(PACKAGE.parent).with_suffix("").parts
        own = part_of(".".join(parts))
        if own is None or own == "__init__":
            continue
        for module in imports(source):
            target = part_of(module)
            if target is None or target == own or target == "schemas":
                continue
            if LEVEL[target] <= LEVEL[own]:
                wrong.append(f"{source.relative_to(PACKAGE)} imports {module}")
    return wrong


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()}
    parts -= {"__init__", "__pycache__", "py", "schemas"}
    assert parts <= set(LEVEL), f"not in a layer: {sorted(parts - set(LEVEL))}"


def test_no_module_imports_from_its_own_layer_or_above() -> None:
    assert upward_imports() == []
