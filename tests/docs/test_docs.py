"""The documentation is checked like code: its Python samples run, its module map exists.

Each page's ```python blocks run in order, in one fresh interpreter per page, in a
temporary directory (so a relative store path like ``./jobs`` lands there). A block whose
first line is ``# NAME.py`` is written to that file instead, for the blocks after it to
import (and for a server's workers to import). Markers are HTML comments, invisible on
the rendered page:

- ``<!-- docs-test: skip (REASON) -->`` on the line before a block skips that block; the
  reason is required, so every skipped sample says why it cannot run here;
- ``<!-- docs-test: serve PATH -->`` anywhere in a page runs ``mpqueue --path PATH serve``
  in that directory while the page's blocks run, for samples that wait for results.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
ARCHITECTURE = ROOT / "docs" / "architecture.md"

FENCE_OPEN = re.compile(r"^```(\w*)\s*$")
SKIP = re.compile(r"^<!-- docs-test: skip \((.+)\) -->$")
SERVE = re.compile(r"^<!-- docs-test: serve (\S+) -->$", re.M)
FILE_BLOCK = re.compile(r"^# ([\w/]+\.py)$")
PAGE_TIMEOUT_S = 90.0
SERVER_STOP_S = 30.0


@dataclass
class Block:
    """One fenced block of a page: its language, first line number, text, skip reason."""

    lang: str
    line: int
    text: str
    skip: str | None


def blocks_of(page: Path) -> list[Block]:
    """Every fenced block of ``page``, with the skip marker on the line before it."""
    lines = page.read_text().splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE_OPEN.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = lines.index("```", index + 1)  # a page with an unclosed fence fails here
        before = lines[index - 1] if index else ""
        marker = SKIP.match(before)
        text = "\n".join(lines[index + 1 : end]) + "\n"
        found.append(Block(opening.group(1), index + 2, text, marker and marker.group(1)))
        index = end + 1
    return found


def python_blocks(page: Path) -> list[Block]:
    return [block for block in blocks_of(page) if block.lang == "python"]


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def runner_script(page: Path, blocks: list[Block]) -> str:
    """A script that runs the page's code blocks in order in one namespace, each compiled
    under the page's name and padded so a traceback shows the page's own line numbers."""
    sources = [
        (f"{page_id(page)}", "\n" * (block.line - 1) + block.text)
        for block in blocks
        if block.skip is None and not FILE_BLOCK.match(block.text.split("\n", 1)[0])
    ]
    # Guarded: a worker started by spawn or forkserver imports this script again.
    return (
        "if __name__ == '__main__':\n"
        f"    for filename, source in {sources!r}:\n"
        "        exec(compile(source, filename, 'exec'), globals())\n"
    )


def sample_env() -> dict[str, str]:
    """This environment without the variables that would point samples elsewhere."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MPQUEUE_PATH", "MPQUEUE_SECRET", "MPQUEUE_SHARED_STORE")
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def start_server(store: str, cwd: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "mpqueue", "--path", store, "serve", "--workers", "2"]
    return subprocess.Popen(
        [*cmd, "--log-level", "warning"],
        cwd=cwd,
        env=sample_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop_server(server: subprocess.Popen[str]) -> str:
    """SIGTERM the page's server and return its output; it must exit 0 within the limit."""
    server.send_signal(signal.SIGTERM)
    try:
        output, _ = server.communicate(timeout=SERVER_STOP_S)
    except subprocess.TimeoutExpired:
        server.kill()
        output, _ = server.communicate()
        raise AssertionError(f"the docs' server did not stop on SIGTERM:\n{output}") from None
    assert server.returncode == 0, f"the docs' server exited {server.returncode}:\n{output}"
    return output


PAGES_WITH_PYTHON = [page for page in PAGES if python_blocks(page)]


@pytest.mark.timeout(PAGE_TIMEOUT_S + SERVER_STOP_S + 30)
@pytest.mark.parametrize("page", PAGES_WITH_PYTHON, ids=page_id)
def test_python_samples_run(page: Path, tmp_path: Path) -> None:
    blocks = python_blocks(page)
    for block in blocks:
        written = FILE_BLOCK.match(block.text.split("\n", 1)[0])
        if written and block.skip is None:
            target = tmp_path / written.group(1)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text)
    script = tmp_path / "run_page_samples.py"
    script.write_text(runner_script(page, blocks))
    serve = SERVE.search(page.read_text())
    server = None if serve is None else start_server(serve.group(1), tmp_path)
    try:
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=sample_env(),
            capture_output=True,
            text=True,
            timeout=PAGE_TIMEOUT_S,
        )
    finally:
        server_output = "" if server is None else stop_server(server)
    assert done.returncode == 0, (
        f"{page_id(page)}'s samples failed:\n{done.stdout}{done.stderr}\n"
        f"server output:\n{server_output}"
    )


def test_samples_are_found_and_few_are_skipped() -> None:
    """The parser sees the samples (a broken fence would hide them), and most run."""
    every = [block for page in PAGES_WITH_PYTHON for block in python_blocks(page)]
    skipped = [block for block in every if block.skip]
    assert len(every) >= 10, f"only {len(every)} python samples found in docs/ and README"
    assert len(skipped) * 5 <= len(every), f"{len(skipped)} of {len(every)} samples skipped"


def test_a_skip_marker_names_its_reason() -> None:
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if line.startswith("<!-- docs-test: skip"):
                assert SKIP.match(line), f"{page_id(page)}:{number}: skip without (reason)"


MODULE_PATH = re.compile(r"\bmpqueue/[\w/]*\w(?:\.py)?/?")


def named_paths() -> set[str]:
    return set(MODULE_PATH.findall(ARCHITECTURE.read_text()))


def test_architecture_names_only_existing_modules() -> None:
    missing = sorted(path for path in named_paths() if not (ROOT / path).exists())
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"


def test_architecture_places_every_module() -> None:
    """Every module of the package has its line on the page, so a new one cannot hide."""
    named = named_paths()
    modules = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "mpqueue").rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py") or path.parent == ROOT / "mpqueue"
    )
    unplaced = [module for module in modules if module not in named]
    assert not unplaced, f"docs/architecture.md does not place: {unplaced}"
