"""The folders are the layers: every import in the package goes from a layer to one that the
table in docs/architecture.md lets it import, and the imports have no cycle. The table is read
from that page, so the page and this test cannot disagree. Imports are read with ``ast``, all of
them: at module level, inside functions, and under ``TYPE_CHECKING``."""
import ast
import re
import sys

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "nstbatch"
TABLE = ROOT / "docs" / "architecture.md"


def layer_table() -> tuple[dict[str, set[str]], set[str]]:
    """{layer: the layers it may import (itself included)}, and the root folder's modules that
    are faces, from the page's table (``| layer | folder | holds | may import |``)."""
    rows = [line for line in TABLE.read_text().splitlines() if line.startswith("| ")]
    header = rows.index(next(row for row in rows if row.replace(" ", "").startswith("|layer|folder|")))
    cells = []
    for row in rows[header + 2:]:
        cells.append([cell.strip() for cell in row.strip("|").split("|")])
        if len(cells[-1]) != 4:
            cells.pop()
            break
    layers = [layer.strip("*`") for layer, *_ in cells]
    allowed, faces = {}, set()
    for layer, (_, folder, _, imports) in zip(layers, cells):
        named = set(re.findall(r"\b[a-z]+\b", imports))
        allowed[layer] = (set(layers) if {"every", "layer"} <= named else named & set(layers)) | {layer}
        if layer == "faces":
            faces = set(re.findall(r"`(\w+)`", folder))
    return allowed, faces


def module_name(path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str, faces: set[str]) -> str:
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()):
        return parts[1]  # nstbatch.engine.vgg, or a layer's package itself
    return "faces" if module == "nstbatch" or parts[-1] in faces else "root"


def imports_of(path, at_import_time: bool = False) -> list[tuple[int, str, str]]:
    """(line, module imported, kind) for every import in ``path`` (``at_import_time``: those
    outside functions only): kind is ``nstbatch`` for the package's own modules, else the
    top-level name of the library."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    in_functions = {id(inner) for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                    for inner in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if at_import_time and id(node) in in_functions:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:  # `from .io import webdataset` imports the module io.webdataset
                sub = f"{target}.{alias.name}"
                is_module = (ROOT / sub.replace(".", "/")).with_suffix(".py").is_file() or \
                    (ROOT / sub.replace(".", "/")).is_dir()
                name = sub if is_module else target
                found.append((node.lineno, name, name.split(".")[0]))
    return found


def modules():
    return sorted(PACKAGE.rglob("*.py"))


def test_every_import_goes_from_a_layer_to_one_it_may_import():
    allowed, faces = layer_table()
    assert set(allowed) == {"root", "engine", "io", "styles", "jobs", "faces"}, allowed
    wrong = []
    for path in modules():
        source = layer_of(module_name(path), faces)
        for line, target, kind in imports_of(path):
            if kind == "nstbatch" and layer_of(target, faces) not in allowed[source]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({source}) imports {target} "
                             f"({layer_of(target, faces)})")
    assert not wrong, "\n".join(wrong)


def test_the_lower_layers_stay_light():
    """root imports nothing but the standard library when it is imported (``environment``'s
    process-wide settings reach Pillow and ONNX Runtime inside its functions); io never
    imports torch or ONNX (validation, planning, status and report answer on a login node)."""
    _, faces = layer_table()
    heavy = {"torch", "torchvision", "onnx", "onnxruntime", "tensorrt"}
    wrong = []
    for path in modules():
        layer = layer_of(module_name(path), faces)
        if layer == "root":
            wrong += [f"{path.relative_to(ROOT)}:{line} imports {target}"
                      for line, target, kind in imports_of(path, at_import_time=True)
                      if kind not in ("nstbatch", "__future__") and kind not in sys.stdlib_module_names]
        elif layer == "io":
            wrong += [f"{path.relative_to(ROOT)}:{line} imports {target}"
                      for line, target, kind in imports_of(path) if kind in heavy]
    assert not wrong, "\n".join(wrong)


def test_the_imports_have_no_cycle():
    graph = {module_name(path): {target for _, target, kind in imports_of(path) if kind == "nstbatch"}
             for path in modules()}
    # a module imports its package's __init__ on the way (nstbatch.io for nstbatch.io.images):
    # those are empty here, and edges to them would make every package a cycle
    graph = {module: {t for t in targets if t in graph and t != module and not module.startswith(t + ".")}
             for module, targets in graph.items()}
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(target):] + [target]))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_the_checker_sees_a_wrong_import_and_a_cycle(tmp_path, monkeypatch):
    """The checks above on a made-up package: an engine module importing jobs, and two root
    modules importing each other inside functions."""
    fake_root = tmp_path
    package = fake_root / "nstbatch"
    for folder in ("engine", "jobs"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "engine" / "loop.py").write_text("from ..jobs import plan\n")
    (package / "jobs" / "plan.py").write_text("")
    (package / "a.py").write_text("def f():\n    from . import b\n")
    (package / "b.py").write_text("def g():\n    from .a import f\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake_root)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    assert [target for _, target, _ in imports_of(package / "engine" / "loop.py")] == ["nstbatch.jobs.plan"]
    allowed, faces = {"engine": {"engine", "root"}, "jobs": {"jobs"}, "root": {"root"}}, set()
    assert layer_of("nstbatch.jobs.plan", faces) == "jobs" not in allowed[layer_of("nstbatch.engine.loop", faces)]
    with pytest.raises(AssertionError, match="nstbatch.a -> nstbatch.b -> nstbatch.a"):
        test_the_imports_have_no_cycle()


def test_the_table_names_every_module_in_its_layer_s_row():
    """A newcomer reading docs/architecture.md finds every module where it lives."""
    rows = {}
    for line in TABLE.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 4:
            rows[cells[0].strip("*`")] = set(re.findall(r"`(\w+)`", cells[1] + cells[2]))
    _, faces = layer_table()
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.stem
        if name == "__init__" and path.parent != PACKAGE:
            continue  # a layer's package itself
        layer = layer_of(module_name(path), faces)
        if name not in rows[layer]:
            missing.append(f"{module_name(path)} (layer {layer})")
    assert not missing, f"docs/architecture.md's table does not name: {', '.join(missing)}"
