#!/bin/bash
# usage: bench/callgrind/annotate.sh OUTDIR [N_RECORDS]
# For each callgrind part in OUTDIR (cg.out and its dumps cg.out.N, see callgrind-phases.sh):
# the callgrind_annotate summaries, self and inclusive, top 60 functions, written to
# OUTDIR/summary/<part name>.{self,incl}.txt (part name: the dump's label, e.g.
# phase01-produce, or "exit" for the part callgrind writes when the broker stops); prints
# "part Ir [Ir/record]" per part.
set -eu  # no pipefail: head closes callgrind_annotate's pipe early
OUT=$1; N=${2:-}
mkdir -p "$OUT/summary"
for f in "$OUT"/cg.out*; do
  case "$f" in *.txt) continue ;; esac
  name=$(grep -m1 -E '^desc: Trigger' "$f" | sed -E 's/^desc: Trigger: (dump )?//; s/Program termination/exit/; s/ /_/g')
  # Header (about 25 lines) then the top 60 functions.
  callgrind_annotate --threshold=100 "$f" | head -85 > "$OUT/summary/$name.self.txt"
  callgrind_annotate --inclusive=yes --threshold=100 "$f" | head -85 > "$OUT/summary/$name.incl.txt"
  ir=$(grep -m1 -E '^(summary|totals):' "$f" | awk '{print $2}')
  if [ -n "$N" ]; then
    printf '%s %s %s\n' "$name" "$ir" "$(( ir / N ))"
  else
    printf '%s %s\n' "$name" "$ir"
  fi
done | sort
