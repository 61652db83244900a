"""BD-rate of each curve of one `coin bench` results folder against the curve of the same name in
another (the same codecs measured before a decoder change, say), from their summary.json files.

    python benchmarks/bd_against.py benchmarks/results/mri-filter --against benchmarks/results/mri-mean
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from coinpp.evaluation import rd


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--against", type=Path, required=True)
    args = ap.parse_args()
    new, old = (rd.curves(json.loads((f / "summary.json").read_text())) for f in (args.folder, args.against))
    for name in sorted(set(new) & set(old)):
        bd = rd.bd_rate(old[name], new[name])
        print(f"{name}: {'n/a' if bd is None else f'{bd:+.1f} %'} BD-rate against {args.against}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
