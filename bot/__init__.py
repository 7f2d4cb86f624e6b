"""jitbot: Slack-first just-in-time access."""

__version__ = "0.1.0"  # kept equal to pyproject.toml's version (tests/test_release.py)
