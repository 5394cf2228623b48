"""The README's first command from a fresh clone, timed: ``git clone`` of this checkout's HEAD into a
temporary folder, then ``./install.sh && .venv/bin/lume run`` there, as a new user types it.

    python benchmarks/fresh_clone.py                 # time it; compare with docs/results/default/
    python benchmarks/fresh_clone.py --update        # also copy its results into docs/results/default/

It prints the wall time of the install and of ``lume run``, and whether the leaderboard equals the
committed one (``docs/results/default/leaderboard.json``) cell for cell. ``--update`` writes the
run's ``leaderboard.json`` and ``run.json`` and the timing (``fresh-clone.json``) there; then
``python docs/results/readme_tables.py`` puts them into the README. Run it on a quiet machine
(nothing else running): the wall time is the figure; the leaderboard does not depend on the load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results" / "default"


def _load_average() -> str:
    try:
        return "load average %.2f before the start" % os.getloadavg()[0]
    except OSError:
        return "load not known"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--update", action="store_true", help="copy the run's results and timing into docs/results/default/")
    ap.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    args = ap.parse_args()
    load = _load_average()
    tmp = Path(tempfile.mkdtemp(prefix="lume-fresh-"))
    clone = tmp / "lumebench"
    t0 = time.time()
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    shared = REPO.parent / "shared"
    if shared.exists():  # the clone sits where CI puts it: ../shared beside it
        (tmp / "shared").symlink_to(shared)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LUME_", "ATEN_", "MKL_", "OMP_", "ONEDNN_"))}
    t_install = time.time()
    subprocess.run(["./install.sh"], cwd=clone, check=True, env=env, stdout=subprocess.DEVNULL)
    install_s = time.time() - t_install
    t_run = time.time()
    log = clone / "run.log"
    with open(log, "w") as f:
        rc = subprocess.run([".venv/bin/lume", "run"], cwd=clone, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    run_s = time.time() - t_run
    total_s = time.time() - t0
    print(f"clone + install {t_install - t0 + install_s:.0f} s, lume run {run_s:.0f} s (exit {rc}), total {total_s:.0f} s")
    if rc != 0:
        print(log.read_text()[-3000:])
        return 1
    board = json.loads((clone / "runs" / "default" / "leaderboard.json").read_text())
    committed = RESULTS / "leaderboard.json"
    same = committed.exists() and json.loads(committed.read_text())["rows"] == board["rows"]
    print("leaderboard: " + ("identical, cell for cell, to docs/results/default/leaderboard.json" if same
                             else "DIFFERS from docs/results/default/leaderboard.json" if committed.exists()
                             else "nothing committed to compare with"))
    run = json.loads((clone / "runs" / "default" / "run.json").read_text())
    cpu = ((run.get("meta") or {}).get("machine") or {}).get("numerics", {}).get("cpu", {}).get("model")
    if args.update:
        RESULTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(clone / "runs" / "default" / "leaderboard.json", RESULTS / "leaderboard.json")
        shutil.copy(clone / "runs" / "default" / "run.json", RESULTS / "run.json")
        (RESULTS / "fresh-clone.json").write_text(json.dumps({
            "command": "time (./install.sh && .venv/bin/lume run)   # via python benchmarks/fresh_clone.py",
            "date": time.strftime("%Y-%m-%d"), "cpu": cpu, "load": load, "install_s": round(install_s, 1),
            "run_s": round(run_s, 1), "total_s": round(install_s + run_s, 1),
            "noise": "One measurement: on this shared 2-core machine the same command has varied by about 20 % "
                     "between runs (README, how noisy)."}, indent=1) + "\n")
        print(f"wrote {RESULTS}/leaderboard.json, run.json, fresh-clone.json")
    if args.keep:
        print(f"clone kept in {clone}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if (same or args.update or not committed.exists()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
