#!/usr/bin/env python3
"""Opens connections to a PROXY port, sends each a PROXY v2 header and holds them, silent.

    Benchmarks/hold.py [--host 127.0.0.1] PORT COUNT

Connection i (from 0) claims the source 10.x.y.z with x.y.z = i + 1 (so no two share a
source address, and a per-client limit is never what stops them), source port 1024 + i % 64000,
destination 198.51.100.7:443. The connections are opened one after the other (each connect
waits for the handshake), so the server never has more than a few of them in progress. Once all
are open it prints `held COUNT` and waits, reading nothing and sending nothing more, until it is
terminated (SIGTERM, SIGINT); the kernel then closes every socket. Exits with status 1, naming
the connection, if one cannot be opened, and 2 on bad usage.

Raises its own soft descriptor limit to the hard one. Used by Benchmarks/forward.sh to measure
the memory a proxy holds per idle forwarded connection.
"""

import argparse
import resource
import signal
import socket
import struct
import sys

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def header(index: int) -> bytes:
    number = index + 1
    source = bytes([10, (number >> 16) & 0xFF, (number >> 8) & 0xFF, number & 0xFF])
    destination = bytes([198, 51, 100, 7])
    ports = struct.pack("!HH", 1024 + index % 64000, 443)
    # version 2, PROXY; AF_INET, STREAM; 12 bytes of addresses
    return SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 12) + source + destination + ports


def main() -> int:
    parser = argparse.ArgumentParser(description="Hold COUNT silent connections after a PROXY v2 header.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int)
    arguments = parser.parse_args()
    if not 0 < arguments.port < 65536 or not 0 < arguments.count < (1 << 24):
        parser.error("PORT must be 1 to 65535 and COUNT 1 to 16777215")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    held = []
    for index in range(arguments.count):
        try:
            connection = socket.create_connection((arguments.host, arguments.port), timeout=10)
            connection.sendall(header(index))
        except OSError as error:
            print(f"hold: connection {index}: {error}", file=sys.stderr)
            return 1
        held.append(connection)

    print(f"held {len(held)}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
