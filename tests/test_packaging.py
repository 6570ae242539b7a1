"""What `pip install .` ships: every package of the source tree (tests use an editable install,
which finds them all anyway, so a package missing from pyproject.toml would only fail a real user)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_in_the_source_tree_is_installed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    server = ROOT / "server"
    found = {".".join(init.parent.relative_to(server).parts) for init in server.rglob("__init__.py")}
    assert found - listed == set(), "packages missing from pyproject.toml"
    assert "camcast.client" in listed  # the player, from client/ (package-dir)
