"""Print uv's pinned, hashed requirement line from uv.lock, for pip.

uv installs everything else from the lock, but something has to install uv
first: `pip install --require-hashes -r <(python .ci/locked_uv.py)`. Reading
the version and hashes from uv.lock (where the `test` extra pins uv) keeps one
pin of the tool for CI, the Dockerfile and developers.

Usage: python .ci/locked_uv.py [path/to/uv.lock]
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def locked_requirement(lock: dict[str, object], name: str = "uv") -> str:
    packages = lock.get("package", [])
    assert isinstance(packages, list)
    for package in packages:
        if package.get("name") == name:
            files = [*package.get("wheels", []), *([package["sdist"]] if "sdist" in package else [])]
            hashes = " ".join(f"--hash={file['hash']}" for file in files)
            return f"{name}=={package['version']} {hashes}"
    raise SystemExit(f"error: {name} is not in the lock (the test extra pins it)")


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "uv.lock"
    print(locked_requirement(tomllib.loads(path.read_text())))
