"""The layers hold: each part of the product imports only the parts below it, the lab
(research, simulations, benchmarks, tests) sits above the product, and the phantom world
never reaches up into the firewall (docs/design.md). Imports inside functions count too."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: What each part of the product may import, besides itself (and third-party libraries).
ALLOWED = {
    "deid_client.io": set(),
    "deid_client.metrics": set(),
    "deid_client.figures": {"deid_client.io"},
    "deid_client.editing": {"deid_client.io", "deid_client.phantom"},  # the phantom model as a backend
    "deid_client.phantom": {"deid_client.io", "deid_client.editing"},  # its words are a PromptTemplate
    "deid_client.firewall": {"deid_client.io", "deid_client.editing", "deid_client.metrics",
                             "deid_client.figures"},
    "deid_client.task": {"deid_client.io", "deid_client.editing", "deid_client.firewall",
                         "deid_client.phantom", "deid_client.metrics"},
    "deid_client.client_app": {"deid_client.task"},
    "deid_client.cli": {"deid_client"},  # the command line uses the whole product
    "deid_client": set(),  # __init__
    "server": {"deid_client.task", "deid_client.io", "deid_client.figures"},
}
LAB = ("research", "simulations", "benchmarks", "tests")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    module, found = _module(path), set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            found.add(name)
            found |= {f"{name}.{a.name}" for a in node.names}
    return found


def _part(name: str) -> str | None:
    """The ALLOWED entry a module belongs to (the longest prefix)."""
    matches = [p for p in ALLOWED if name == p or name.startswith(p + ".")]
    return max(matches, key=len) if matches else None


def _violations() -> list[str]:
    bad = []
    for path in [*ROOT.glob("deid_client/**/*.py"), *ROOT.glob("server/**/*.py")]:
        here = _part(_module(path))
        for name in _imports(path):
            if name.split(".")[0] in LAB:
                bad.append(f"{_module(path)} imports the lab's {name}")
            target = _part(name)
            if target is None or target == here or (here == "deid_client.cli"):
                continue
            if not any(target == a or target.startswith(a + ".") for a in ALLOWED[here]):
                bad.append(f"{_module(path)} ({here}) imports {name}")
    return sorted(set(bad))


def test_the_product_imports_only_downwards():
    assert _violations() == []


def test_the_phantom_world_never_imports_the_firewall():
    for path in ROOT.glob("deid_client/phantom/**/*.py"):
        assert not any(n.startswith("deid_client.firewall") for n in _imports(path)), path


def test_the_check_sees_a_wrong_arrow(tmp_path, monkeypatch):
    """A firewall module importing the task layer is caught (the check can fail)."""
    wrong = ROOT / "deid_client" / "firewall" / "_layer_probe.py"
    wrong.write_text("from deid_client.task.data import NodeData\nimport research.reid\n")
    try:
        found = _violations()
    finally:
        wrong.unlink()
    assert "deid_client.firewall._layer_probe (deid_client.firewall) imports deid_client.task.data" in found
    assert "deid_client.firewall._layer_probe imports the lab's research.reid" in found
