"""``lume models`` (the model registry)."""

from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    m = sub.add_parser("models", help="list the named base models",
                       description="The model registry: names accepted by --model, where each comes from "
                                   "offline and online, and whether it must be fine-tuned first.")
    m.add_argument("--json", action="store_true", help="machine-readable output")
    m.set_defaults(handler=run_models)


def run_models(args: argparse.Namespace) -> int:
    from lumebench.registry import MODELS

    specs = [e.obj for e in MODELS.entries()]
    if args.json:
        print(json.dumps([s.to_dict() for s in specs], indent=2))
        return 0
    rows = [("name", "params", "offline", "online id", "fine-tune", "description")]
    for s in specs:
        offline = {"build": "built from the data"}.get(s.offline or "", s.offline or "no (hub only)")
        if offline.startswith("wheel:"):
            offline = "wheel " + offline[len("wheel:"):].split("/")[0].replace("_", "-")
        rows.append((s.name, s.params, offline, s.online_id or "-", "yes" if s.needs_finetune else "no",
                     s.description))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5])
    print("\nAlso accepted: a local model directory (e.g. a `lume finetune` target), a .gguf file, "
          "or a hub id org/name.")
    return 0
