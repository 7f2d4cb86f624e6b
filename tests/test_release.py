"""What a release carries: one version everywhere, the licence text, a changelog entry, how to report."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bot import __version__
from bot.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_jitbot_version_prints_the_version_of_pyproject(capsys: pytest.CaptureFixture[str]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"jitbot {project['version']}" == f"jitbot {__version__}"


def test_the_licence_changelog_and_security_policy_are_there() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    licence = (ROOT / "LICENSE").read_text()
    assert project["license"] == {"text": "Apache-2.0"}
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert "END OF TERMS AND CONDITIONS" in licence and len(licence.splitlines()) > 190  # the full text
    assert f"## [{__version__}]" in (ROOT / "CHANGELOG.md").read_text()
    assert "Report a vulnerability" in (ROOT / "SECURITY.md").read_text()
