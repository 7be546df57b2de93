#!/usr/bin/env python3
# fdatasync of a 4 KiB write, p50/p99 in microseconds, into four kinds of file: a growing one
# (append), one zero-filled and synced beforehand (zeroed), one from posix_fallocate (fallocate)
# and one from ftruncate (set_len). Run from a directory on the disk to measure:
#   python3 bench/fdatasync_files.py [DIR]   (default: the current directory)
import os, sys, time
def run(mode, n=2000, bs=4096):
    p=os.path.join(sys.argv[1] if len(sys.argv) > 1 else '.', 'fdatasync_files_%s.tmp' % mode)
    if os.path.exists(p): os.unlink(p)
    fd=os.open(p, os.O_RDWR|os.O_CREAT, 0o644)
    size=n*bs
    if mode=='zeroed':
        os.write(fd, b'\0'*size); os.fsync(fd); os.lseek(fd,0,0)
    elif mode=='fallocate':
        os.posix_fallocate(fd, 0, size); os.fsync(fd)
    elif mode=='set_len':
        os.ftruncate(fd, size); os.fsync(fd)
    buf=os.urandom(bs); lat=[]
    for i in range(n):
        os.pwrite(fd, buf, i*bs)
        t=time.perf_counter(); os.fdatasync(fd); lat.append((time.perf_counter()-t)*1e6)
    os.close(fd); os.unlink(p)
    lat.sort()
    return round(lat[n//2]), round(lat[int(n*.99)])
for r in range(2):
    for m in ('append','zeroed','fallocate','set_len'):
        print(r, m, 'p50/p99 us', run(m))
