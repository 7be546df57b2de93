#!/bin/bash
# Instructions the broker executes per phase of a client's work, from callgrind.
#
# usage: bench/callgrind-phases.sh WHARF_BIN WHARF_BENCH_BIN CLIENT OUTDIR
#   CLIENT: kcat            20,000 x 1 KiB records to a 1-partition topic with kcat (librdkafka,
#                           acks=all, linger.ms=5, batch.num.messages=1000), then read back with kcat
#           native-durable  wharf-bench --client native --scenario produce-durable (acks=all,
#                           8 partitions, 16 connections) bounded to 20,480 records, and its
#                           read-back check (Fetch)
#           native-consume  wharf-bench --client native --scenario consume-1k: produce-1k
#                           (acks=1) bounded to 20,480 records, its read-back check, and the
#                           measured consume-1k read
#
# The broker (shards=1) runs under `valgrind --tool=callgrind --instr-atstart=no`; instrumentation
# is switched on once it listens. The client talks to it through bench/callgrind/phase_proxy.py
# (the broker advertises the proxy's port, so librdkafka's connections go through it too), which
# runs `callgrind_control -d` at each change between produce, fetch and admin requests, once
# every answer of the phase is back. OUTDIR gets one callgrind dump per phase
# (cg.out.N, named in proxy.jsonl), the final part (cg.out), and for each part
# `callgrind_annotate` self and inclusive summaries (bench/callgrind/annotate.sh, in
# OUTDIR/summary/); stdout: one line per part, "part Ir Ir/record".
set -euo pipefail
WHARF=$1; BENCH=$2; CLIENT=$3; OUT=$4
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"; rm -rf "$OUT/data" "$OUT"/cg.out* "$OUT/proxy.jsonl"
BPORT=$((20000 + RANDOM % 10000)); PPORT=$((BPORT + 1))
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/cg.out" \
  "$WHARF" serve --listen 127.0.0.1:$BPORT --data-dir "$OUT/data" --set shards=1 \
  --set log_level=warn --set advertised_port=$PPORT --set admin_listen=127.0.0.1:0 \
  > "$OUT/broker.log" 2>&1 &
# Debian's `valgrind` may be a wrapper: the pid callgrind_control needs is the one in the log.
# (The port probes open and close a connection without sending a byte.)
for _ in $(seq 1 600); do (: < /dev/tcp/127.0.0.1/$BPORT) 2>/dev/null && break; sleep 0.2; done
VPID=$(grep -m1 -oE '^==[0-9]+==' "$OUT/broker.log" | tr -d =)
python3 "$HERE/callgrind/phase_proxy.py" $PPORT $BPORT $VPID "$OUT/proxy.jsonl" &
PROXY=$!
for _ in $(seq 1 100); do (: < /dev/tcp/127.0.0.1/$PPORT) 2>/dev/null && break; sleep 0.1; done
callgrind_control -i on $VPID > /dev/null 2>&1
B=127.0.0.1:$PPORT
case "$CLIENT" in
  kcat)
    N=20000
    if [ ! -f /tmp/cg_msgs_$N ]; then python3 -c "
for i in range($N): print(f'{i:08d}' + 'x'*1016)" > /tmp/cg_msgs_$N; fi
    # Creates the topic (auto-create, 1 partition), then produces, then reads back.
    kcat -P -b $B -t bench -p 0 -X topic.metadata.refresh.interval.ms=600000 /dev/null 2>/dev/null
    kcat -P -b $B -t bench -p 0 -X acks=all -X linger.ms=5 -X batch.num.messages=1000 -l /tmp/cg_msgs_$N
    kcat -C -b $B -t bench -p 0 -o beginning -c $N -e -q | wc -l > "$OUT/kcat-consumed.txt"
    ;;
  native-durable|native-consume)
    SCEN=produce-durable; [ "$CLIENT" = native-consume ] && SCEN=consume-1k
    # 40 requests x 8 partitions x 64 records x 1 KiB = 20,971,520 bytes = 20,480 records.
    "$BENCH" --bootstrap $B --client native --scenario $SCEN --repeat 1 \
      --duration 600 --max-gb 0.02097152 --skip-ceilings --commit "$(git -C "$HERE" rev-parse --short HEAD)" \
      --results "$OUT/results.jsonl" > "$OUT/bench.stdout" 2> "$OUT/bench.stderr"
    ;;
  *) echo "unknown client $CLIENT" >&2; exit 2 ;;
esac
sleep 1
kill -USR1 $PROXY
for _ in $(seq 1 300); do grep -q '"ended"' "$OUT/proxy.jsonl" && break; sleep 0.1; done
kill $PROXY; wait $PROXY 2>/dev/null || true
kill -TERM $VPID; while kill -0 $VPID 2>/dev/null; do sleep 0.2; done
N=20480; [ "$CLIENT" = kcat ] && N=20000
"$HERE/callgrind/annotate.sh" "$OUT" $N
