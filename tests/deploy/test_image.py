"""The Docker image: a plain (non-editable) install of the build context must hold every package."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_is_in_the_wheel_the_image_installs() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    roots = {name.split(".")[0] for name in listed}
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in roots for init in (ROOT / top).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    missing = sorted(found - listed)
    assert not missing, (
        f"add {missing} to [tool.setuptools] packages in pyproject.toml, or `pip install .` leaves them out"
    )


def test_the_build_context_keeps_what_the_dockerfile_copies_and_drops_secrets() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert ".env" in ignored and ".git" in ignored and ".venv" in ignored
    for needed in ("pyproject.toml", "README.md", "tierq"):
        assert needed not in ignored, f"{needed} is needed to build the image"
    assert "pip install --no-deps ." in dockerfile and "USER tierq" in dockerfile
