#!/usr/bin/env bash
# Checks that the versions agree: Cargo.toml's [workspace.package] version, every crate's (the Python
# package takes its version from bindings-python's crate through maturin), bindings-node's package.json
# and lock file, and any version the Python package states itself. Fails naming both values if not.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_METADATA="$(cargo metadata --no-deps --format-version 1)" python3 - <<'PY'
import json
import os
import re
import sys
from pathlib import Path

import tomllib  # Python 3.11+, as the README asks of a developer's machine


def toml(path):
    return tomllib.loads(Path(path).read_text(encoding="utf-8"))


want = toml("Cargo.toml")["workspace"]["package"]["version"]
source = 'Cargo.toml [workspace.package] version'
found = []

root = os.getcwd()
for pkg in json.loads(os.environ["CARGO_METADATA"])["packages"]:
    manifest = os.path.relpath(pkg["manifest_path"], root)
    found.append((f"{manifest} (crate {pkg['name']})", pkg["version"]))

package = json.loads(Path("bindings-node/package.json").read_text(encoding="utf-8"))
found.append(('bindings-node/package.json "version"', package.get("version")))
lock = json.loads(Path("bindings-node/package-lock.json").read_text(encoding="utf-8"))
found.append(('bindings-node/package-lock.json "version"', lock.get("version")))
lock_root = lock.get("packages", {}).get("", {})
found.append(('bindings-node/package-lock.json packages[""].version', lock_root.get("version")))

project = toml("pyproject.toml").get("project", {})
if "version" in project:
    found.append(("pyproject.toml [project] version", project["version"]))
elif "version" not in project.get("dynamic", []):
    found.append(("pyproject.toml [project] version (neither stated nor dynamic)", None))
# The module's __version__ comes from the crate (env!("CARGO_PKG_VERSION")); a literal one is checked too.
literal = re.compile(r"""^__version__\s*(?::\s*str\s*)?=\s*["']([^"']+)["']""", re.M)
for path in sorted(Path("bindings-python/python").rglob("*.py")):
    for m in literal.finditer(path.read_text(encoding="utf-8")):
        found.append((f"{path} __version__", m.group(1)))

bad = [(where, value) for where, value in found if value != want]
for where, value in bad:
    print(f"check-versions: {source} is {want}, but {where} is {value}", file=sys.stderr)
if bad:
    sys.exit(1)
print(f"check-versions: {want} in all {len(found)} places (the crates, package.json and its lock, the Python package)")
PY
