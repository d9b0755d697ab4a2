"""The shipped types stay true: mypy.stubtest compares _floodwall.pyi with the built native
module (names, signatures, defaults), and mypy --strict checks the Python layer against it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import floodwall


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # From a scratch directory, so the installed package is what gets checked and mypy's cache
    # lands there.
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd)


def test_stub_matches_the_native_module(tmp_path: Path) -> None:
    r = run(tmp_path, "mypy.stubtest", "floodwall._floodwall")
    assert r.returncode == 0, r.stdout + r.stderr


def test_python_layer_type_checks_strictly(tmp_path: Path) -> None:
    r = run(tmp_path, "mypy", "--strict", "-p", "floodwall")
    assert r.returncode == 0, r.stdout + r.stderr


def test_package_ships_its_types() -> None:
    pkg = Path(floodwall.__file__).parent
    assert (pkg / "py.typed").exists() and (pkg / "_floodwall.pyi").exists()
