"""Importing the package and diffusers does not print bitsandbytes' warning about an optional CPU kernel."""

import subprocess
import sys


def test_importing_prints_no_bitsandbytes_kernel_warning():
    code = "import break_a_scene, diffusers, bitsandbytes.optim"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "gemm_4bit" not in result.stderr + result.stdout
