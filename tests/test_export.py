"""The scripts of export/, run as a user runs them."""
import subprocess
import sys

import pytest
from tests.conftest import ROOT


@pytest.mark.slow
def test_check_parity_compares_onnx_runtime_with_pytorch_at_the_sizes_asked():
    out = subprocess.run([sys.executable, str(ROOT / "export" / "check_parity.py"), "--size", "48",
                          "--size", "40x56", "--providers", "cpu"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["48x48", "40x56"]
    assert all("CPUExecutionProvider" in line and float(line.split()[4]) < 1e-4 for line in lines), lines
