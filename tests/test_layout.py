"""The package layout the issue asks for: the node runtime apart from the tools, and no import circle.

Reads every module's imports with ``ast`` (imports inside functions included), so a lazy import cannot
hide an arrow from the runtime into ``memsam_ros.tools`` or close a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "memsam_ros"
TOOLS = "memsam_ros.tools"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, known: set[str], root: Path = ROOT) -> set[str]:
    """First-party modules ``path`` imports: ``from memsam_ros.tools import x`` counts as ``...tools.x``."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}".rstrip(".")
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, known) for p in paths}


def is_tool(module: str) -> bool:
    return module == TOOLS or module.startswith(TOOLS + ".")


def test_tools_live_in_their_own_subpackage():
    modules = set(graph())
    for tool in ("bag_tools", "player", "recorder", "evaluate", "scoring", "report", "demo", "progress"):
        assert f"{TOOLS}.{tool}" in modules, tool
    for runtime in ("node", "sync", "worker", "params", "diagnostics", "throttle", "topics"):
        assert f"memsam_ros.{runtime}" in modules, runtime
    decoders = ("codec", "compressed", "pointcloud", "event_codecs", "cdr", "received", "converter", "transforms")
    for module in (*decoders, "stamps"):
        assert f"memsam_ros.inputs.{module}" in modules, module
        assert f"memsam_ros.{module}" not in modules, f"{module} belongs in memsam_ros/inputs/"


def test_the_input_layer_imports_nothing_of_the_node():
    """``memsam_ros/inputs/`` (the decoders) stands apart: it imports memsam_core and itself, never the node."""
    inputs = "memsam_ros.inputs"
    arrows = [
        (m, t)
        for m, targets in graph().items()
        if m.startswith(inputs)
        for t in targets
        if t.startswith("memsam_ros") and not (t == inputs or t.startswith(inputs + ".")) and t != "memsam_ros"
    ]
    assert arrows == [], f"the input layer imports the node runtime: {arrows}"


def test_runtime_never_imports_the_tools():
    arrows = [(m, t) for m, targets in graph().items() if not is_tool(m) for t in targets if is_tool(t)]
    assert arrows == [], f"node runtime imports tools: {arrows}"


def test_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state and (cycle := visit(module)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))


def test_one_helper_per_job():
    """No function or class is defined twice in memsam_ros (the issue found the ~/info loader, a ``_Frame``
    class, stamp conversions and topic resolution twice); only the command-line entry points repeat."""
    where: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                where.setdefault(node.name, []).append(module_name(path))
    twice = {name: modules for name, modules in where.items() if len(modules) > 1}
    assert set(twice) <= {"main", "build_parser"}, twice
    helpers = {"stamp_ns": "memsam_ros.inputs.stamps", "modality_topics": "memsam_ros.topics",
               "info_message_type": "memsam_ros.info", "Received": "memsam_ros.inputs.received"}  # fmt: skip
    assert {name: where[name] for name in helpers} == {name: [module] for name, module in helpers.items()}


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The reader itself: an import inside a function and a relative import are both arrows."""
    source = tmp_path / "memsam_ros" / "node.py"
    source.parent.mkdir()
    source.write_text("def f():\n    from memsam_ros.tools.demo import main\n\nfrom . import sync\n")
    known = {"memsam_ros", "memsam_ros.node", "memsam_ros.sync", "memsam_ros.tools", "memsam_ros.tools.demo"}
    assert imported_modules(source, known, tmp_path) == {"memsam_ros.tools.demo", "memsam_ros.sync", "memsam_ros"}
