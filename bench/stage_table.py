#!/usr/bin/env python3
"""The before/after stage breakdown of ADR 0017 from two e2e-latency results files:
`python3 bench/stage_table.py BEFORE.jsonl AFTER.jsonl` (median over the runs of each line)."""
import json,sys,statistics
def load(path):
    out={}
    for l in open(path):
        d=json.loads(l)
        runs=d['config']['runs']
        st={}
        for r in runs:
            for f in r.get('stages',[]):
                st.setdefault((f['path'],f['stage']),[]).append(f)
        e2e={k:statistics.median([r[k] for r in runs]) for k in ['p50_ms','p99_ms','p999_ms','max_ms']}
        out[d['client']]=(st,e2e,d['load_average'])
    return out
before=load(sys.argv[1]); after=load(sys.argv[2])
def fmt(v):
    if v is None: return '>1000'
    return f"{v:.3f}" if v<1 else f"{v:.2f}" if v<10 else f"{v:.1f}"
for client in before:
    if client not in after: continue
    sb,eb,lb=before[client]; sa,ea,la=after[client]
    print(f"\n**{client}** (load average at start: before {lb[0]:.2f}, after {la[0]:.2f}); median of 3 runs, ms\n")
    print("| stage | p50 before → after | p99 before → after | p99.9 before → after | max ≤ before → after |")
    print("| --- | --- | --- | --- | --- |")
    keys=list(sb.keys())+[k for k in sa if k not in sb]
    for k in keys:
        row=[f"{k[0]}/{k[1]}"]
        for q in ['p50_ms','p99_ms','p999_ms','max_ms_at_most']:
            def med(s):
                if k not in s: return '—'
                vals=[f[q] if f[q] is not None else 1e9 for f in s[k]]
                m=statistics.median(vals)
                return fmt(None if m>=1e9 else m)
            row.append(f"{med(sb)} → {med(sa)}")
        print("| "+" | ".join(row)+" |")
    row=["**e2e (client)**"]+[f"**{fmt(eb[q])} → {fmt(ea[q])}**" for q in ['p50_ms','p99_ms','p999_ms','max_ms']]
    print("| "+" | ".join(row)+" |")
