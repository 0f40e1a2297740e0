"""The checkout and commit benchmark (see scripts/bench/checkout); every number measured here."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

BIN = Path(sys.executable).parent
GIB = 1 << 30

RANDN_SAVE = textwrap.dedent(
    """
    import sys, torch
    from safetensors.torch import save_file
    from basinvcs.model.registry import load_substrate
    sub = load_substrate(sys.argv[1])
    gen = torch.Generator().manual_seed(0)
    save_file({s.name: torch.randn(s.shape, generator=gen) for s in sub.specs}, sys.argv[2])
    """
)

THETA0_READ = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from basinvcs.model.registry import load_substrate
    sub = load_substrate(sys.argv[1])
    for spec in sub.specs:
        sub.theta0(spec)
    total = 0
    for f in sorted(Path(sys.argv[2]).glob("*.safetensors")):
        with open(f, "rb") as fh:
            while chunk := fh.read(64 << 20):
                total += len(chunk)
    print(total)
    """
)


def measure(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in GiB) of one command, by GNU time."""
    out = subprocess.run(
        ["/usr/bin/time", "-f", "%e %M", *cmd], cwd=cwd, capture_output=True, text=True
    )
    if out.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr}")
    wall, kib = out.stderr.strip().splitlines()[-1].split()
    return float(wall), int(kib) / (1 << 20)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--substrate", default="1B")
    ap.add_argument("--skip-10b", action="store_true")
    args = ap.parse_args()
    basin, py = str(BIN / "basin"), sys.executable
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        work = Path(tmp)
        os.environ["BASIN_HOME"] = str(work / "home")
        os.environ["BASIN_PROGRESS"] = "never"
        subprocess.run([basin, "init", "repo"], cwd=work, check=True, capture_output=True)
        repo = work / "repo"
        make = (
            "import torch; from basinvcs import Repository, porcelain; from basinvcs.objects "
            "import Basin\nwith Repository.open('.') as r:\n    g = torch.Generator()."
            "manual_seed(0)\n    z = (torch.randn(r.config.chart.dim, generator=g) * 0.05)"
            ".tolist()\n    porcelain.commit(r, Basin.create(r.config.chart, z), 'bench basin')"
        )
        subprocess.run([py, "-c", make], cwd=repo, check=True)
        sub = args.substrate
        rows = []
        co = measure([basin, "checkout", "HEAD", "--model", sub, "-o", str(work / "ck")], repo)
        base = measure([py, "-c", RANDN_SAVE, sub, str(work / "baseline.safetensors")], repo)
        rows.append((f"checkout --model {sub}", co, "randn + save_file", base))
        (work / "baseline.safetensors").unlink()
        subprocess.run([basin, "checkout", "general~1"], cwd=repo, check=True, capture_output=True)
        cm = measure([basin, "commit", "--model", str(work / "ck"), "-m", "bench"], repo)
        base2 = measure([py, "-c", THETA0_READ, sub, str(work / "ck")], repo)
        rows.append(("commit --model", cm, "θ0 + read file", base2))
        size = sum(f.stat().st_size for f in (work / "ck").glob("*.safetensors")) / GIB
        shard = max(f.stat().st_size for f in (work / "ck").glob("*.safetensors")) / GIB
        subprocess.run(["rm", "-rf", str(work / "ck")], check=True)
        big = None
        if not args.skip_10b:
            big = measure(
                [
                    basin,
                    "checkout",
                    "general",
                    "--model",
                    "10B",
                    "--dtype",
                    "bfloat16",
                    "-o",
                    str(work / "ck10"),
                ],
                repo,
            )
    print(f"substrate {sub}: {size:.2f} GiB written as float32, largest shard {shard:.2f} GiB")
    print(f"{'operation':<26}{'s':>8}{'GiB':>7}   {'baseline':<18}{'s':>8}{'GiB':>7}{'ratio':>8}")
    for name, (t, m), bname, (bt, bm) in rows:
        print(f"{name:<26}{t:>8.1f}{m:>7.2f}   {bname:<18}{bt:>8.1f}{bm:>7.2f}{t / bt:>7.2f}x")
    for name, (t, _), _, (bt, _) in rows:
        verdict = "met" if t / bt <= 1.5 else "MISSED"
        print(f"target: {name} within 1.5x of its baseline: {verdict} ({t / bt:.2f}x)")
    peak = rows[0][1][1]
    print(
        f"target: checkout peak memory <= one shard + 1 GiB ({shard + 1:.2f} GiB): "
        f"{'met' if peak <= shard + 1 else 'MISSED'} ({peak:.2f} GiB)"
    )
    if big:
        print(
            f"target: checkout --model 10B --dtype bfloat16 within 4 GiB: "
            f"{'met' if big[1] <= 4 else 'MISSED'} ({big[1]:.2f} GiB peak, {big[0]:.0f} s)"
        )


if __name__ == "__main__":
    main()
