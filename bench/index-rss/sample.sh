#!/bin/bash
# Samples VmRSS (KiB) of every process whose executable is $1, once a second, until killed.
exe="$1"
while true; do
  for p in /proc/[0-9]*; do
    if [ "$(readlink $p/exe 2>/dev/null)" = "$exe" ]; then
      echo "$(date +%T) pid ${p#/proc/} $(grep -E 'VmRSS|VmHWM' $p/status 2>/dev/null | tr -s ' ' | tr '\n' ' ')"
    fi
  done
  sleep 1
done
