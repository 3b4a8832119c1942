"""README's presets table says what the presets are: each row's four preset columns are the
values of `nstbatch.config.PRESETS`, and every StyleParams field has its row, so a preset
changed, or a field added, without its table fails here."""
from fractions import Fraction
import pytest

from nstbatch.config import FIELDS, PRESETS
from tests.conftest import ROOT

README = ROOT / "README.md"
COLUMNS = ("balanced", "fast", "seed", "gatys")
HEADER = "| parameter | `balanced` (default) | `fast` | `seed` | `gatys` | meaning |"


def table_rows() -> dict[str, list[str]]:
    lines = README.read_text().splitlines()
    start = lines.index(HEADER) + 2  # past the header and its rule
    rows = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        name = cells[0].split()[0].strip("`")  # '`content_weight` (α)' -> 'content_weight'
        rows[name] = cells[1:1 + len(COLUMNS)]
    return rows


def number(text: str) -> float:
    return float(Fraction(text))  # '1/255', '0.05', '4.25'


def says(cell: str, value, balanced) -> bool:
    """Whether a table cell states ``value`` ('same': the default's value)."""
    if cell == "same":
        return value == balanced
    if isinstance(value, tuple):
        if cell.endswith(" each"):
            return len(set(value)) == 1 and number(cell.split()[0]) == pytest.approx(value[0])
        parts = cell.split(",")
        return len(parts) == len(value) and all(says(p, v, None) for p, v in zip(parts, value))
    if isinstance(value, bool) or isinstance(value, str):
        return cell == str(value)
    return number(cell) == pytest.approx(value, rel=1e-9)


def test_the_presets_table_states_every_presets_values():
    rows = table_rows()
    assert rows, "the presets table is missing from README.md"
    unknown = set(rows) - set(FIELDS)
    assert not unknown, f"README rows for no StyleParams field: {unknown}"
    missing = set(FIELDS) - set(rows) - {"preset"}  # the preset is the columns
    assert not missing, f"StyleParams fields without a README row: {missing}"
    wrong = [f"{name} [{preset}]: README says {cell!r}, the preset has {getattr(PRESETS[preset], name)!r}"
             for name, cells in rows.items() for preset, cell in zip(COLUMNS, cells)
             if not says(cell, getattr(PRESETS[preset], name), getattr(PRESETS["balanced"], name))]
    assert not wrong, "\n".join(wrong)
