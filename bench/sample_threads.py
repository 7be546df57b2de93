#!/usr/bin/env python3
"""Per-thread CPU % and context switches per second of the newest `wharf` and `wharf-bench`
processes over 3 s, after waiting ARGV[1] seconds (default 4): `python3 bench/sample_threads.py 4 &`
before a wharf-bench run. Used for bench/results/2026-11-27-e2e-cpu.md."""
import os,time,subprocess,sys
time.sleep(float(sys.argv[1]) if len(sys.argv)>1 else 4)
def pids():
    out=[]
    for name in ['wharf','wharf-bench']:
        r=subprocess.run(['pgrep','-n','-x',name],capture_output=True,text=True).stdout.split()
        out+=r
    return out
def snap(ps):
    d={}
    for p in ps:
        for t in os.listdir(f'/proc/{p}/task'):
            try:
                comm=open(f'/proc/{p}/task/{t}/comm').read().strip()
                st=open(f'/proc/{p}/task/{t}/stat').read().rsplit(')',1)[1].split()
                cpu=int(st[11])+int(st[12])
                cs=0
                for l in open(f'/proc/{p}/task/{t}/status'):
                    if 'ctxt_switches' in l: cs+=int(l.split()[1])
                d[(p,t)]=(comm,cpu,cs)
            except Exception: pass
    return d
ps=pids(); a=snap(ps); time.sleep(3); b=snap(ps)
rows=[]
for k in b:
    if k in a:
        rows.append((b[k][1]-a[k][1], (b[k][2]-a[k][2])/3, k[0], b[k][0]))
rows.sort(reverse=True)
tot={}
for cpu,cs,p,n in rows:
    tot.setdefault(p,[0,0]); tot[p][0]+=cpu; tot[p][1]+=cs
    if cpu>0 or cs>100: print(f'{p:>6} {n:18} cpu% {cpu/3:5.1f} cs/s {cs:7.0f}')
for p,(c,s) in tot.items(): print('total',p,f'cpu% {c/3:.1f} cs/s {s:.0f}')
