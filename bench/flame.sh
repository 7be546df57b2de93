#!/bin/bash
# A flame graph of the broker (wharf, spawned by wharf-bench) during one native-client scenario.
#
# usage: bench/flame.sh WHARF_BIN WHARF_BENCH_BIN SCENARIO OUTDIR [SECONDS]
#   SCENARIO: produce-1k | consume-1k | e2e-latency (8 partitions, --client native,
#   --duration 10 --repeat 1 --skip-ceilings). perf samples the broker process (all threads,
#   user and kernel stacks) at 999 Hz for SECONDS (default 4) in the middle of the measured
#   part: for produce-1k and e2e-latency from 3 s after the scenario starts; for consume-1k
#   from 0.5 s after the consume connection has received 50 MB (the second connection to do so:
#   the read-back check's comes first; --max-gb 4 so the read lasts a few seconds).
# Output: OUTDIR/SCENARIO.folded (inferno-collapse-perf --kernel: kernel frames end in _[k];
# gzipped when over 1 MB; weights are the samples' periods), OUTDIR/SCENARIO.svg
# (inferno-flamegraph), OUTDIR/SCENARIO.widest.txt (bench/flame/widest.py), the perf event
# (SCENARIO.perf-event.txt) and wharf-bench's output (SCENARIO.bench.{stdout,stderr}).
# Stacks are unwound with DWARF debug info (`--call-graph dwarf`): release builds have no frame
# pointers, so `-g` (frame pointers) cuts most Rust stacks after one or two frames. Set
# CALLGRAPH=fp to use frame pointers anyway. COMMIT: the commit the binaries were built from
# (default: this tree's HEAD), passed to wharf-bench --commit.
set -euo pipefail
WHARF=$1; BENCH=$2; SCEN=$3; OUT=$4; SECS=${5:-4}
CALLGRAPH=${CALLGRAPH:-dwarf}
export PATH="$HOME/.cargo/bin:$PATH"
mkdir -p "$OUT"
TMP=$(mktemp -d)
MAXGB=2; [ "$SCEN" = consume-1k ] && MAXGB=4
"$BENCH" --spawn --wharf-bin "$WHARF" --client native --scenario "$SCEN" --duration 10 \
  --repeat 1 --skip-ceilings --max-gb $MAXGB --commit "${COMMIT:-$(git rev-parse --short HEAD)}" --results "$TMP/results.jsonl" \
  > "$OUT/$SCEN.bench.stdout" 2> "$OUT/$SCEN.bench.stderr" &
BENCHPID=$!
BPID=""
for _ in $(seq 1 300); do
  BPID=$(pgrep -P $BENCHPID -x wharf || true); [ -n "$BPID" ] && break; sleep 0.1
done
[ -n "$BPID" ] || { echo "broker not found" >&2; exit 1; }
until grep -q "^== $SCEN" "$OUT/$SCEN.bench.stderr"; do sleep 0.05; done
if [ "$SCEN" = consume-1k ]; then
  PORT=$(grep -m1 -oE 'on 127\.0\.0\.1:[0-9]+' "$OUT/$SCEN.bench.stderr" | cut -d: -f2)
  # wharf-bench's connections to the broker that have received over 50 MB, in the order
  # they got there: the read-back check's, then consume-1k's (produce connections receive
  # only small answers).
  readers=()
  while [ ${#readers[@]} -lt 2 ]; do
    while read -r conn; do
      [[ " ${readers[*]} " == *" $conn "* ]] || readers+=("$conn")
    done < <(ss -tinH state established "( dport = :$PORT )" | awk '
      /^[0-9]/ {conn = $3}
      /bytes_received:/ {
        for (i = 1; i <= NF; i++) if ($i ~ /^bytes_received:/) {
          split($i, kv, ":"); if (kv[2] > 50000000) print conn
        }
      }')
    kill -0 $BENCHPID 2>/dev/null || { echo "wharf-bench ended before the consume read" >&2; exit 1; }
    sleep 0.02
  done
  sleep 0.5
else
  sleep 3
fi
perf record -F 999 --call-graph "$CALLGRAPH" -p "$BPID" -o "$TMP/perf.data" -- sleep "$SECS" 2> "$OUT/$SCEN.perf.log"
wait $BENCHPID
perf evlist -i "$TMP/perf.data" > "$OUT/$SCEN.perf-event.txt" 2>/dev/null || true
perf script -i "$TMP/perf.data" 2>/dev/null | inferno-collapse-perf --kernel > "$OUT/$SCEN.folded"
inferno-flamegraph --title "wharf broker: $SCEN (native client), $SECS s at 999 Hz" \
  < "$OUT/$SCEN.folded" > "$OUT/$SCEN.svg"
rm -rf "$TMP"
python3 "$(dirname "$0")/flame/widest.py" "$OUT/$SCEN.folded" 5 > "$OUT/$SCEN.widest.txt"
# Folded stacks over 1 MB are kept gzipped.
[ "$(stat -c %s "$OUT/$SCEN.folded")" -gt 1000000 ] && gzip -f "$OUT/$SCEN.folded"
cat "$OUT/$SCEN.widest.txt"
