#!/bin/bash
# (Whole runs, kcat only; bench/callgrind-phases.sh counts each produce and fetch phase alone, for both clients.)
# usage: callgrind_run.sh BIN MODE(N0|P|PC) N OUTDIR -> prints total instructions (Ir)
BIN=$1; MODE=$2; N=$3; OUT=$4
mkdir -p $OUT; rm -rf $OUT/data; PORT=$((20000 + RANDOM % 10000))
valgrind --tool=callgrind --callgrind-out-file=$OUT/cg.$MODE.out $BIN serve --listen 127.0.0.1:$PORT --data-dir $OUT/data --set shards=1 --set log_level=warn > $OUT/broker.$MODE.log 2>&1 &
VPID=$!
for i in $(seq 1 600); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.2; done
if [ ! -f /tmp/cg_msgs_$N ]; then python3 -c "
import sys
for i in range($N): print(f'{i:08d}' + 'x'*1016)" > /tmp/cg_msgs_$N; fi
kcat -P -b 127.0.0.1:$PORT -t bench -p 0 -X linger.ms=5 -X batch.num.messages=1000 -X topic.metadata.refresh.interval.ms=600000 /dev/null 2>/dev/null
if [ "$MODE" != N0 ]; then kcat -P -b 127.0.0.1:$PORT -t bench -p 0 -X linger.ms=5 -X batch.num.messages=1000 -l /tmp/cg_msgs_$N; fi
if [ "$MODE" = PC ]; then kcat -C -b 127.0.0.1:$PORT -t bench -p 0 -o beginning -c $N -e -q > /dev/null; fi
kill -TERM $VPID; wait $VPID
grep -E "^summary|^totals" $OUT/cg.$MODE.out | head -1 | awk '{print $2}'
