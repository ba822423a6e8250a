"""Sum what bench/gcprobe logged: garbage collections per second, by generation.

    python -m bench.gclog FOLDER [--from HH:MM:SS] [--to HH:MM:SS]

Prints, for each second with any collection and for each server process, the collections of
each generation and their milliseconds, then the totals.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path


def summarize(folder: Path, start: str | None, end: str | None) -> str:
    lines = []
    for path in sorted(folder.glob("gc-*.log")):
        per_second: dict[int, list[list[float]]] = defaultdict(lambda: [[0, 0.0] for _ in range(3)])
        for row in path.read_text().splitlines():
            fields = row.split()
            if len(fields) != 4:
                continue  # a line cut short by a process killed as it wrote
            when, generation, took, _freed = fields
            second = int(float(when))
            clock = time.strftime("%H:%M:%S", time.gmtime(second))
            if (start and clock < start) or (end and clock > end):
                continue
            one = per_second[second][int(generation)]
            one[0] += 1
            one[1] += float(took)
        lines.append(f"{path.name}: second (UTC), then per generation 0/1/2: collections, ms")
        totals = [[0, 0.0] for _ in range(3)]
        for second in sorted(per_second):
            gens = per_second[second]
            for total, one in zip(totals, gens, strict=True):
                total[0] += one[0]
                total[1] += one[1]
            shown = "  ".join(f"{int(n):4d} {ms:7.1f}" for n, ms in gens)
            lines.append(f"  {time.strftime('%H:%M:%S', time.gmtime(second))}  {shown}")
        shown = "  ".join(f"{int(n):4d} {ms:7.1f}" for n, ms in totals)
        lines.append(f"  total     {shown}")
    return "\n".join(lines) if lines else f"no gc-*.log in {folder}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gclog", description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--from", dest="start", help="first second, HH:MM:SS (UTC)")
    parser.add_argument("--to", dest="end", help="last second, HH:MM:SS (UTC)")
    args = parser.parse_args(argv)
    print(summarize(args.folder, args.start, args.end))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
