"""Reporting for ``python -m bench``: the run's context (machine, versions, date, load,
command) and the writer that puts one scenario's section into ``bench/RESULTS.md``.

Each scenario owns one section between two HTML comment markers; writing a scenario
replaces only its own section and keeps everything else in the file.
"""

from __future__ import annotations

import json
import os
import re
from importlib import metadata
from typing import Any

from bench.store_bench import machine

PACKAGES = ("mpqueue", "lmdb", "cloudpickle", "psutil", "click", "huey", "matplotlib")
START = "<!-- bench:{name}:start -->"
END = "<!-- bench:{name}:end -->"


def versions() -> dict[str, str]:
    """Installed versions of the packages the benchmark touches ("-" if absent)."""
    out = {}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "-"
    return out


def context(command: str) -> dict[str, Any]:
    """Everything a reader needs to judge a run: machine, Python, package versions,
    the mpqueue sources loaded, date, load average at the start, the command."""
    info = machine()
    info["versions"] = versions()
    info["command"] = command
    return info


def context_text(ctx: dict[str, Any]) -> str:
    src = ctx["mpqueue_source"]
    pkgs = ", ".join(f"{k} {v}" for k, v in ctx["versions"].items())
    load = f"{ctx['loadavg_start'][0]:.2f}"
    if "loadavg_end" in ctx:
        load += f" at the start, {ctx['loadavg_end'][0]:.2f} at the end"
    return "\n".join(
        [
            f"- Command: `{ctx['command']}`",
            f"- Date: {ctx['date']}; wall time {ctx.get('wall_seconds', 0):.0f} s",
            f"- Machine: {ctx['nproc']} CPUs ({ctx['cpu']}), {ctx['platform']}; temp dir "
            f"`{ctx['tmpdir']}`",
            f"- Python {ctx['python']}; {pkgs}; LMDB {ctx['lmdb']}",
            f"- mpqueue sources: {src['package_dir']} (sha256 of loaded modules `{src['sha256']}`)",
            f"- 1-minute load average: {load} (2 cores shared with other developers' test suites)",
        ]
    )


def section(name: str, title: str, ctx: dict[str, Any], body: str) -> str:
    """One scenario's RESULTS.md section, markers included."""
    return "\n".join(
        [
            START.format(name=name),
            f"## `{name}`: {title}",
            "",
            context_text(ctx),
            "",
            body.rstrip(),
            END.format(name=name),
        ]
    )


def write_section(path: str, name: str, text: str) -> None:
    """Put ``text`` (from ``section``) into the file at ``path``: in place of the
    scenario's previous section if there is one, else appended. Other text is kept."""
    try:
        with open(path, encoding="utf-8") as fh:
            old = fh.read()
    except FileNotFoundError:
        old = "# Benchmark results\n"
    pattern = re.compile(
        re.escape(START.format(name=name)) + r".*?" + re.escape(END.format(name=name)), re.S
    )
    if pattern.search(old):
        new = pattern.sub(lambda _: text, old, count=1)
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(new)
    os.replace(tmp, path)


def write_json(path: str, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, default=str)
