#!/usr/bin/env python3
"""Top functions of a py-spy profile, by own and by cumulative samples.

Reads py-spy's ``--format raw`` output (collapsed stacks: ``frame;frame;... count``, each
frame ``function (file:line)``); record with ``--function`` so a function's samples are not
split across its lines:

  py-spy record -F -f raw -r 250 -o /tmp/engine.txt -- \\
      python bench/bench_engine.py --sagas 1000 --warmup 200
  python bench/hotspots.py /tmp/engine.txt --top 15
  python bench/hotspots.py /tmp/engine.txt --under 'handle (bus_orchestrator'   # a subtree
"""

from __future__ import annotations

import argparse
import os
import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The project root, whatever folder it was checked out in."""
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*):(?P<line>\d+)\)$")


def short(frame: str) -> str:
    """``function (file:line)`` with the file made relative to site-packages or the repo."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "/lib/python3", f"{ROOT}/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path}:{match['line']})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--under", help="only stacks through a frame containing this text")
    args = parser.parse_args()

    own: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    total = 0
    for line in args.profile.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [short(f) for f in stack.split(";")]
        if args.under and not any(args.under in f for f in frames):
            continue
        count = int(count_text)
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            cumulative[frame] += count

    width = min(os.get_terminal_size(0).columns if os.isatty(0) else 140, 160) - 16
    for title, counter in (("own", own), ("cumulative", cumulative)):
        print(f"\n# top {args.top} by {title} samples (of {total})")
        for frame, count in counter.most_common(args.top):
            print(f"{100.0 * count / total:6.1f}% {count:7d}  {frame[:width]}")


if __name__ == "__main__":
    main()
