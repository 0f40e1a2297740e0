"""Commands that do not need torch (or transformers, networkx, nacl) must not import them."""

import subprocess
import sys

import pytest

PROBE = """
import sys
from basinvcs.cli import main
try:
    main({args!r}, standalone_mode=False)
finally:
    heavy = sorted(
        m for m in ("torch", "transformers", "networkx", "numpy", "nacl") if m in sys.modules
    )
    print("HEAVY:" + ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "args, allowed",
    [
        (["--help"], set()),
        (["log", "-n", "20"], set()),
        (["log", "--oneline"], set()),
        (["status"], set()),
        (["branch"], set()),
        (["show"], {"nacl"}),  # it checks the commit's signature
        (["verify"], {"nacl"}),
        (["log", "--graph"], {"networkx"}),
        (["diff", "general", "HEAD"], set()),
    ],
)
def test_light_commands_stay_light(repo_dir, args, allowed):
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=args)],
        capture_output=True,
        text=True,
        cwd=repo_dir,
    )
    heavy = done.stderr.rsplit("HEAVY:", 1)[1].strip()
    assert set(filter(None, heavy.split(","))) <= allowed, done.stderr
