#!/usr/bin/env python3
"""A Kafka TCP proxy that cuts a broker's callgrind profile into phases.

Usage: phase_proxy.py LISTEN_PORT BROKER_PORT VALGRIND_PID LOG

Forwards bytes unchanged between clients and the broker (127.0.0.1) and reads only the
frame headers: requests (size, api_key, api_version, correlation id) and responses (size).
Requests are classed as produce (api key 0), fetch (1), or other. Before forwarding a
Produce or Fetch request that starts a new phase (the previous phase was of another class),
or a ListOffsets (2), CreateTopics (19) or DeleteTopics (20) request that ends a produce or fetch phase, it
waits until every request forwarded so far has been answered (up to 10 s), then runs
`callgrind_control -d PHASE VALGRIND_PID`: callgrind writes the instructions counted since
the previous dump to a file of its own and zeroes its counters. Each dump therefore holds
one phase (the phase that just ended, named in the dump's trigger); the log (JSON lines)
says which requests and bytes each phase carried. SIGUSR1 ends the last phase the same way. Other requests (Metadata, ApiVersions,
...) stay in the current phase.
"""
import asyncio
import json
import signal
import struct
import subprocess
import sys
import time

LISTEN_PORT, BROKER_PORT, VG_PID, LOG = (
    int(sys.argv[1]),
    int(sys.argv[2]),
    sys.argv[3],
    sys.argv[4],
)
CLASS = {0: "produce", 1: "fetch"}
ENDS_PHASE = {2, 19, 20}  # ListOffsets, CreateTopics, DeleteTopics

state = {
    "phase": "setup",
    "seq": 0,
    "outstanding": 0,
    "requests": {},
    "req_bytes": 0,
    "resp_bytes": 0,
    "t0": time.time(),
}
lock = asyncio.Lock()
log = open(LOG, "a", buffering=1)


def class_of(key):
    return CLASS.get(key, "other")


async def boundary(new_phase):
    """Ends the current phase: waits for outstanding answers, dumps, starts `new_phase`."""
    waited = 0.0
    while state["outstanding"] > 0 and waited < 10.0:
        await asyncio.sleep(0.01)
        waited += 0.01
    # A label starting with a digit is taken for a pid by callgrind_control.
    label = f"phase{state['seq']:02d}-{state['phase']}"
    started = time.time()
    proc = await asyncio.create_subprocess_exec(
        "callgrind_control", "-d", label, VG_PID,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    output, _ = await proc.communicate()
    rc = 0 if b"OK." in output else 1
    log.write(json.dumps({
        "dump": label,
        "phase": state["phase"],
        "requests_by_api_key": state["requests"],
        "request_bytes": state["req_bytes"],
        "response_bytes": state["resp_bytes"],
        "outstanding_at_dump": state["outstanding"],
        "phase_seconds": round(started - state["t0"], 3),
        "dump_seconds": round(time.time() - started, 3),
        "callgrind_control_ok": rc == 0,
        "next_phase": new_phase,
    }) + "\n")
    state.update(phase=new_phase, seq=state["seq"] + 1, requests={}, req_bytes=0,
                 resp_bytes=0, t0=time.time())


async def read_frame(reader):
    head = await reader.readexactly(4)
    (size,) = struct.unpack(">i", head)
    body = await reader.readexactly(size)
    return head + body


async def client_to_broker(creader, bwriter, conn):
    try:
        while True:
            frame = await read_frame(creader)
            key = struct.unpack(">h", frame[4:6])[0]
            cls = class_of(key)
            async with lock:
                current = class_of_phase(state["phase"])
                if cls in ("produce", "fetch") and cls != current:
                    await boundary(cls)
                elif key in ENDS_PHASE and current in ("produce", "fetch"):
                    await boundary("other")
                state["requests"][str(key)] = state["requests"].get(str(key), 0) + 1
                state["req_bytes"] += len(frame)
                state["outstanding"] += 1
                conn["outstanding"] += 1
            bwriter.write(frame)
            await bwriter.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        bwriter.close()


def class_of_phase(phase):
    return phase if phase in ("produce", "fetch") else "other"


async def broker_to_client(breader, cwriter, conn):
    try:
        while True:
            frame = await read_frame(breader)
            state["outstanding"] -= 1
            conn["outstanding"] -= 1
            state["resp_bytes"] += len(frame)
            cwriter.write(frame)
            await cwriter.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        cwriter.close()


async def handle(creader, cwriter):
    breader, bwriter = await asyncio.open_connection("127.0.0.1", BROKER_PORT)
    conn = {"outstanding": 0}
    up = asyncio.create_task(client_to_broker(creader, bwriter, conn))
    down = asyncio.create_task(broker_to_client(breader, cwriter, conn))
    await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
    # A closed connection's unanswered requests will never be answered.
    for task in (up, down):
        task.cancel()
    state["outstanding"] -= conn["outstanding"]
    conn["outstanding"] = 0
    cwriter.close()
    bwriter.close()


async def end():
    async with lock:
        await boundary("end")
    log.write(json.dumps({"ended": True}) + "\n")


async def main():
    loop = asyncio.get_running_loop()
    # SIGUSR1 ends the last phase with a dump of its own (before the broker is stopped).
    loop.add_signal_handler(signal.SIGUSR1, lambda: asyncio.ensure_future(end()))
    server = await asyncio.start_server(handle, "127.0.0.1", LISTEN_PORT)
    async with server:
        await server.serve_forever()


asyncio.run(main())
