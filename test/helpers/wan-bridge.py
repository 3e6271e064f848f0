#!/usr/bin/env python3
"""A userspace Ethernet bridge between two interfaces that delays and drops frames, like tc netem.

The lab uses it where the kernel has no netem qdisc (CONFIG_NET_SCH_NETEM is not set on these machines):
it runs in an "impairment" namespace between a machine and the lab's switch and forwards every frame in
both directions, after `delay_ms` (+- `jitter_ms`) and with probability `loss_pct` of dropping it.
Settings arrive as JSON lines on stdin ({"delayMs":50,"jitterMs":5,"lossPct":2}); "{}" clears them.
Only the Python standard library is used. Prints "ready" once both sockets are bound.
"""
import heapq
import json
import os
import random
import select
import socket
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def open_raw(ifname):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((ifname, 0))
    s.setblocking(False)
    return s


def main():
    a_name, b_name = sys.argv[1], sys.argv[2]
    a, b = open_raw(a_name), open_raw(b_name)
    peer = {a.fileno(): b, b.fileno(): a}
    settings = {"delayMs": 0, "jitterMs": 0, "lossPct": 0}
    queue = []  # (due, seq, socket, frame)
    seq = 0
    stdin = sys.stdin.fileno()
    os.set_blocking(stdin, False)
    pending = b""
    print("ready", flush=True)
    while True:
        timeout = None
        if queue:
            timeout = max(0.0, queue[0][0] - time.monotonic())
        readable, _, _ = select.select([a, b, stdin], [], [], timeout)
        for r in readable:
            if r == stdin:
                chunk = os.read(stdin, 4096)
                if not chunk:
                    return
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if line.strip():
                        new = json.loads(line)
                        settings = {"delayMs": new.get("delayMs", 0), "jitterMs": new.get("jitterMs", 0), "lossPct": new.get("lossPct", 0)}
                        print("ok", flush=True)
                continue
            while True:
                try:
                    frame, addr = r.recvfrom(65535)
                except BlockingIOError:
                    break
                if addr[2] == PACKET_OUTGOING:
                    continue
                if settings["lossPct"] and random.random() * 100 < settings["lossPct"]:
                    continue
                delay = settings["delayMs"]
                if settings["jitterMs"]:
                    delay += random.uniform(-settings["jitterMs"], settings["jitterMs"])
                out = peer[r.fileno()]
                if delay <= 0 and not queue:
                    try:
                        out.send(frame)
                    except OSError:
                        pass
                    continue
                seq += 1
                heapq.heappush(queue, (time.monotonic() + max(0, delay) / 1000.0, seq, out, frame))
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, frame = heapq.heappop(queue)
            try:
                out.send(frame)
            except OSError:
                pass


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
