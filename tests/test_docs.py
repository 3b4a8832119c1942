"""docs/: the generated reference is the code's (docs/make_reference.py)."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_reference_is_what_the_code_generates():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import make_reference
    finally:
        sys.path.pop(0)
    assert (ROOT / "docs" / "reference.md").read_text() == make_reference.render(), \
        "docs/reference.md is stale: run python docs/make_reference.py"


def test_the_reference_names_every_parameter_option_and_variable():
    import typer

    from nstbatch.cli import app
    from nstbatch.config import FIELDS
    from nstbatch.environment import VARIABLES

    page = (ROOT / "docs" / "reference.md").read_text()
    for name in set(FIELDS) - {"preset"}:
        assert f"| `{name}` |" in page, name
    group = typer.main.get_command(app)
    for command in group.commands.values():
        assert f"### `nstbatch {command.name}`" in page
        for param in command.params:
            if param.param_type_name == "option" and param.name not in FIELDS:
                assert f"`{param.opts[0]}`" in page, (command.name, param.opts)
    for variable in VARIABLES:
        assert f"| `{variable}` |" in page


def test_every_variable_the_environment_reads_is_in_its_table(monkeypatch):
    """environment.py reads them; jobs/shards.py reads the array variables that
    ``environment.array_variables`` hands it, and it hands every one of them."""
    from nstbatch.environment import VARIABLES, array_variables

    pattern = r'(?:_int\(env, |\.get\(|environ\[)"([A-Z][A-Z0-9_]+)"'
    arrays = set(re.findall(pattern, (ROOT / "nstbatch" / "jobs" / "shards.py").read_text()))
    for name in arrays:
        monkeypatch.setenv(name, "1")
    assert arrays and arrays <= set(array_variables())
    read = set(re.findall(pattern, (ROOT / "nstbatch" / "environment.py").read_text())) | arrays
    described = set(VARIABLES) | {n for text in VARIABLES.values() for n in re.findall(r"`([A-Z][A-Z0-9_]+)`", text)}
    described |= {f"{prefix}{suffix}" for prefix in ("SLURM_ARRAY_TASK", "SGE_TASK", "LSB_JOBINDEX")
                  for suffix in ("_MIN", "_MAX", "_STEP", "_COUNT", "_FIRST", "_LAST", "_STEPSIZE", "_END")}
    assert read and read <= described, sorted(read - described)


def test_the_generator_s_check_mode_says_when_the_page_is_stale(tmp_path):
    import os
    import shutil

    def check(folder):
        return subprocess.run([sys.executable, str(folder / "make_reference.py"), "--check"], capture_output=True,
                              text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})

    fresh = check(ROOT / "docs")
    assert fresh.returncode == 0, fresh.stderr
    stale = tmp_path / "docs"
    stale.mkdir()
    shutil.copy(ROOT / "docs" / "make_reference.py", stale)
    (stale / "reference.md").write_text((ROOT / "docs" / "reference.md").read_text().replace("| `steps` |", "| `stpes` |"))
    result = check(stale)
    assert result.returncode == 1 and "is stale: run python docs/make_reference.py" in result.stderr
