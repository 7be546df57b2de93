#!/usr/bin/env python3
# fdatasync latency of 1 KiB appends paced at fixed rates (then unpaced), 6 s each, with the
# count and total of fdatasyncs over 4 ms (ADR 0023). Run from a directory on the disk to measure:
#   python3 bench/fdatasync_rate.py [DIR]   (default: the current directory)
import os, sys, time
p=os.path.join(sys.argv[1] if len(sys.argv) > 1 else '.', 'fdatasync_rate.tmp')
for rate in (1000,2000,3000,4000,6000,0):
    if os.path.exists(p): os.unlink(p)
    fd=os.open(p, os.O_RDWR|os.O_CREAT,0o644); buf=os.urandom(1085); off=0
    lat=[]; t0=time.perf_counter(); i=0
    while time.perf_counter()-t0<6:
        if rate:
            due=t0+i/rate; now=time.perf_counter()
            if due>now: time.sleep(due-now)
        os.pwrite(fd,buf,off); off+=len(buf)
        t=time.perf_counter(); os.fdatasync(fd); lat.append((time.perf_counter()-t)*1e3); i+=1
    el=time.perf_counter()-t0; lat.sort(); n=len(lat)
    slow=sum(1 for x in lat if x>4)
    print(f"rate={rate or 'max'} got={n/el:.0f}/s p50={lat[n//2]:.3f} p99={lat[int(n*.99)]:.3f} p99.9={lat[int(n*.999)]:.2f} max={lat[-1]:.1f} stalls>4ms={slow} ({sum(x for x in lat if x>4):.0f} ms)", flush=True)
    os.close(fd); os.unlink(p)
