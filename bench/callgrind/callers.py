#!/usr/bin/env python3
"""Who calls a function in a callgrind part, biggest first.

usage: callers.py CALLGRIND_OUT PATTERN [N]

Runs `callgrind_annotate --tree=caller` and prints the block of the first function whose
line matches PATTERN (a regular expression): its self cost, then its N (default 5) biggest
callers with the inclusive cost of each call.
"""
import re
import subprocess
import sys

path, pattern = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 5
out = subprocess.run(
    ["callgrind_annotate", "--tree=caller", "--threshold=100", path],
    capture_output=True, text=True, check=True,
).stdout


def short(line):
    line = re.sub(r"/root/\.cargo/registry/src/index\.crates\.io-[0-9a-f]+/", "", line)
    return re.sub(r"/rustc/[0-9a-f]+/", "", line)


block = []
for line in out.splitlines():
    if not line.strip():
        block = []
        continue
    block.append(line)
    if re.search(r"\*  .*" + pattern, line):
        rows = [l for l in block if " < " in l]
        rows.sort(key=lambda l: -int(l.split()[0].replace(",", "")))
        for l in [line] + rows[:n]:
            print(short(l))
        break
