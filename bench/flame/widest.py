#!/usr/bin/env python3
"""The widest frames of a folded-stacks file (inferno-collapse-perf --kernel output).

usage: widest.py FILE.folded[.gz] [N]

Prints, as shares of all samples (weights): the N widest self frames (leaf: where the CPU
was) in user space and in the kernel (frames ending in `_[k]`), and the N widest inclusive
frames (on the stack at all, counted once per stack) of Wharf's own crates (`wharf_`),
the 2N+4 widest inclusive kernel frames, then the share of each thread name (the first
frame).
"""
import gzip
import sys
from collections import Counter

path = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 5
opener = gzip.open if path.endswith(".gz") else open
self_user, self_kernel, incl_wharf, threads = Counter(), Counter(), Counter(), Counter()
incl_kernel = Counter()
total = 0
with opener(path, "rt") as f:
    for line in f:
        stack, _, weight = line.rstrip("\n").rpartition(" ")
        w = int(weight)
        frames = stack.split(";")
        total += w
        threads[frames[0]] += w
        leaf = frames[-1]
        (self_kernel if leaf.endswith("_[k]") else self_user)[leaf] += w
        for frame in set(frames[1:]):
            if frame.endswith("_[k]"):
                incl_kernel[frame] += w
            if frame.startswith("wharf_") or "wharf_" in frame.split("::")[0]:
                incl_wharf[frame] += w


def show(title, counter, k=n):
    print(f"{title}:")
    for frame, w in counter.most_common(k):
        print(f"  {100 * w / total:5.1f}%  {frame}")


print(f"total weight {total} (the samples' periods: cycles, or ns with cpu-clock)")
show("widest self frames, user space", self_user)
show("widest self frames, kernel", self_kernel)
print(f"  (all kernel self: {100 * sum(self_kernel.values()) / total:.1f}%)")
show("widest inclusive kernel frames", incl_kernel, 2 * n + 4)
show("widest inclusive frames of wharf crates", incl_wharf)
show("threads", threads, 8)
