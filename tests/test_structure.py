"""Rules of the code's shape that a reader relies on, checked on the source itself: functions
that fit on a screen, and process-wide state changed by the entry points alone."""
import ast
import os
import stat

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "nstbatch"
# The entry points: the CLI, the worker process's entry (pool.py) and the one module that
# reads and sets the environment.
ENTRY_POINTS = {"cli.py", "jobs/pool.py", "environment.py"}


def _modules(*folders):
    for folder in folders or (PACKAGE,):
        for path in sorted(folder.rglob("*.py")):
            yield path.relative_to(PACKAGE if folder == PACKAGE else ROOT).as_posix(), \
                ast.parse(path.read_text(), str(path))


def _parameters(node: ast.FunctionDef) -> int:
    args = node.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    count = len(names) + bool(args.vararg) + bool(args.kwarg)
    return count - (names[:1] in (["self"], ["cls"]))


def test_no_function_outside_the_cli_is_over_80_lines_or_10_parameters():
    too_big = [f"{name}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines,"
               f" {_parameters(node)} parameters"
               for name, tree in _modules(PACKAGE, ROOT / "benchmarks", ROOT / "export") if name != "cli.py"
               for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
               and (node.end_lineno - node.lineno + 1 > 80 or _parameters(node) > 10)]
    assert not too_big, "\n".join(too_big)


# torch's process-wide settings made by calls (threads, determinism, the default dtype)
TORCH_SETTERS = ("set_num_threads", "set_num_interop_threads", "set_default_dtype", "use_deterministic_algorithms",
                 "set_float32_matmul_precision", "set_flush_denormal")


def _global_mutations(tree: ast.AST) -> list[tuple[int, str]]:
    """Process-wide settings: ``os.umask(...)``, ``os.putenv``, writes to ``os.environ`` (item
    assignment, update, pop, setdefault, clear, del), Pillow's ``Image.MAX_IMAGE_PIXELS``,
    torch's threads and other ``torch.set_*`` settings, the cuDNN and TF32 flags
    (``torch.backends.* = ...``), and ONNX Runtime's logger (``set_default_logger_severity``)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target, attr = ast.unparse(node.func.value), node.func.attr
            if (target, attr) in (("os", "umask"), ("os", "putenv"), ("os", "unsetenv")) or (
                    target == "os.environ" and attr in ("update", "pop", "setdefault", "clear", "popitem")) or (
                    target == "torch" and attr in TORCH_SETTERS) or attr == "set_default_logger_severity":
                found.append((node.lineno, ast.unparse(node.func)))
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
            for target in getattr(node, "targets", None) or [node.target]:
                text = ast.unparse(target)
                if text.endswith("MAX_IMAGE_PIXELS") or text.startswith("os.environ[") \
                        or text.startswith("torch.backends."):
                    found.append((node.lineno, text))
    return found


def test_process_wide_state_is_changed_by_the_entry_points_only():
    found = [f"{name}:{line} {what}" for name, tree in _modules() if name not in ENTRY_POINTS
             for line, what in _global_mutations(tree)]
    assert not found, "\n".join(found)


def test_the_checker_sees_each_kind_of_mutation():
    code = ("import os\nfrom PIL import Image\nos.umask(0)\nImage.MAX_IMAGE_PIXELS = None\n"
            "os.environ['X'] = '1'\nos.environ.update(Y='2')\ndel os.environ['X']\n"
            "torch.set_num_threads(2)\ntorch.backends.cudnn.benchmark = True\n"
            "torch.backends.cuda.matmul.allow_tf32 = False\nort.set_default_logger_severity(3)\n"
            "torch.use_deterministic_algorithms(True)\nx = torch.get_num_threads()\n")
    assert sorted(line for line, _ in _global_mutations(ast.parse(code))) == list(range(3, 13))


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_atomic_writes_get_the_permissions_the_umask_gives_any_new_file(tmp_path, mask):
    from nstbatch.fs import atomic_write

    previous = os.umask(mask)  # (this test is its own entry point)
    try:
        atomic_write(tmp_path / "out.bin", lambda f: f.write(b"x"))
        with open(tmp_path / "plain.bin", "wb") as f:
            f.write(b"x")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "out.bin").stat().st_mode)
    assert mode == 0o666 & ~mask == stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin", "plain.bin"]
