#!/usr/bin/env python3
"""Splits a callgrind part's instructions (self cost, every function) into what the bytes
cost and what the rest costs.

usage: breakdown.py CALLGRIND_OUT RECORDS BATCHES

Columns (Ir per record): total; memcpy; memset; CRC-32C (crc32c crate); malloc (glibc
malloc, free, realloc and their helpers, self cost only: the copy a realloc makes is in
memcpy); rest (everything else); total per batch. Large memcpy/memset run as `rep movsb` /
`rep stosb`, which callgrind counts as one instruction per byte.
"""
import re
import subprocess
import sys

path, records, batches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = subprocess.run(
    ["callgrind_annotate", "--auto=no", "--threshold=100", path], capture_output=True, text=True, check=True
).stdout
total = 0
parts = {"memcpy": 0, "memset": 0, "crc32c": 0, "malloc": 0}
for line in out.splitlines():
    m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$", line)
    if not m:
        continue
    ir, what = int(m.group(1).replace(",", "")), m.group(2)
    if what.startswith("PROGRAM TOTALS"):
        total = ir
    elif re.search(r":__mem(cpy|move)_", what):
        parts["memcpy"] += ir
    elif re.search(r":__memset_", what):
        parts["memset"] += ir
    elif re.search(r":crc32c::", what):
        parts["crc32c"] += ir
    elif "malloc/" in what and re.search(r":(_int_)?(malloc|free|realloc|calloc)|:(unlink_chunk|malloc_consolidate|tcache|arena)", what):
        parts["malloc"] += ir
rest = total - sum(parts.values())
cells = [total] + list(parts.values()) + [rest]
print(" ".join(f"{c / records:.0f}" for c in cells), f"{total / batches:.0f}")
