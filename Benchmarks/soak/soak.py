#!/usr/bin/env python3
"""A long soak test of `netproxy serve`: mixed, verified traffic against one server process, with
its descriptors, memory and CPU time compared before and after.

    python3 Benchmarks/soak/soak.py --netproxy .build/release/netproxy [--duration 600] [--clients 50]

Traffic kinds (each worker thread picks one at random, again and again):
  echo        echo streams of 1 KB..4 MB, mostly on the PROXY port, checked by length and sha256;
              ending with a half-close, with a full read then close, or closed early unread
  whoami      whoami over v1 and v2 headers (IPv4 and IPv6 sources): the reported source must be
              the one the header claimed
  http        keep-alive sessions of 1..20 GETs, on the regular and the PROXY port
  slowloris   a PROXY header sent one byte a second: proxy_header_timeout (3 s) must close it
  untrusted   bursts of connections from 127.0.0.9, which is not trusted: closed with no data
  malformed   garbage, truncated headers, bad v2 signatures, oversized headers: closed, no data
  reset       connect (maybe send a little) and reset with SO_LINGER 0
  metrics     GET /metrics on a fresh connection

Exit status 1 if a verification failed, the server ended with more than 2 descriptors above its
start, or the server died; 0 otherwise. Linux only (/proc). Standard library only.
"""

import argparse
import collections
import hashlib
import ipaddress
import json
import os
import random
import re
import select
import socket
import struct
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netproxy_process import (V2_SIGNATURE, NetProxyServer, connect, read_http_response,  # noqa: E402
                              read_to_eof, v1_header, v2_header)

UNTRUSTED_SOURCE = "127.0.0.9"
HEADER_TIMEOUT = 3
IO_TIMEOUT = 30
KB, MB = 1024, 1024 * 1024


class VerificationError(Exception):
    """The server answered, but not what it must have answered."""


# --- shared state ------------------------------------------------------------------------------

class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = collections.defaultdict(lambda: {"ok": 0, "failed": 0, "verification": 0})
        self.errors = collections.Counter()
        self.verifications = []
        self.total = 0

    def record(self, kind, outcome, message=None):
        with self.lock:
            self.counts[kind][outcome] += 1
            self.total += 1
            if outcome == "failed":
                self.errors["%s: %s" % (kind, message)] += 1
            elif outcome == "verification":
                self.verifications.append("%s: %s" % (kind, message))


# A block of pseudo-random bytes; echo payloads are slices of it at random offsets.
PAYLOAD = random.Random(20240601).randbytes(4 * MB + 64 * KB)


def random_source(rng):
    """A documentation address the header claims as the client, and a port."""
    if rng.random() < 0.25:
        ip = str(ipaddress.IPv6Address("2001:db8::") + rng.randrange(1, 1 << 32))
    else:
        ip = "%s.%d" % (rng.choice(["192.0.2", "198.51.100", "203.0.113"]), rng.randrange(1, 255))
    return ip, rng.randrange(1024, 65536)


def random_header(rng):
    ip, port = random_source(rng)
    header = v1_header(ip, port) if rng.random() < 0.5 else v2_header(ip, port)
    return header, (ipaddress.ip_address(ip).compressed, port)


def check_source(document, expected, what):
    source = document.get("source") or {}
    got = (source.get("ip"), source.get("port"))
    if got != expected:
        raise VerificationError("%s: source %s, header claimed %s" % (what, got, expected))


def closed_without_data(sock, timeout):
    """Waits for the server to close; any byte from it is a verification failure."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(4096)
    except (ConnectionResetError, BrokenPipeError):
        return
    except socket.timeout:
        raise VerificationError("still open after %d s" % timeout)
    if data:
        raise VerificationError("server sent %d bytes: %r" % (len(data), data[:40]))


# --- traffic kinds -----------------------------------------------------------------------------

def echo_exchange(sock, payload, mode):
    """Sends while reading (one thread, non-blocking), then ends as `mode` says: "halfclose"
    and "slow" (a small receive window, read slowly) shut down the sending side and read to EOF,
    "close" reads everything back and closes.

    Returns (bytes received, sha256 of them)."""
    slow = mode == "slow"
    sock.setblocking(False)
    view = memoryview(payload)
    sent, received, digest = 0, 0, hashlib.sha256()
    half_closed = False
    deadline = time.monotonic() + IO_TIMEOUT
    while True:
        if sent == len(view) and mode in ("halfclose", "slow") and not half_closed:
            sock.shutdown(socket.SHUT_WR)
            half_closed = True
        if mode == "close" and received >= len(view):
            return received, digest
        want_write = [sock] if sent < len(view) else []
        readable, writable, _ = select.select([sock], want_write, [], 1.0)
        if time.monotonic() > deadline:
            raise socket.timeout("echo: %d/%d sent, %d received after %d s" % (sent, len(view), received, IO_TIMEOUT))
        if readable:
            try:
                chunk = sock.recv(16 * KB if slow else 256 * KB)
            except (ConnectionResetError, BrokenPipeError):
                raise VerificationError("%s: reset after %d of %d bytes echoed" % (mode, received, len(view)))
            if not chunk:
                return received, digest
            received += len(chunk)
            digest.update(chunk)
            if slow:
                time.sleep(0.002)
        if writable:
            try:
                sent += sock.send(view[sent:sent + 256 * KB])
            except (ConnectionResetError, BrokenPipeError):
                raise VerificationError("%s: reset while sending (%d of %d sent, %d echoed)"
                                        % (mode, sent, len(view), received))


def traffic_echo(rng, server):
    proxied = rng.random() < 0.8
    size = int(KB * (4096 ** rng.random()))  # log-uniform, 1 KB .. 4 MB
    offset = rng.randrange(0, len(PAYLOAD) - size)
    payload = PAYLOAD[offset:offset + size]
    mode = rng.choices(["halfclose", "slow", "close", "early"], [35, 10, 40, 15])[0]
    with socket.socket() as sock:
        sock.settimeout(IO_TIMEOUT)
        if mode == "slow":
            # A small window: echoed bytes wait in the server, as behind a slow link.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * KB)
        sock.connect(server.address("echo", proxied))
        if proxied:
            sock.sendall(random_header(rng)[0])
        if mode == "early":
            # Send a part, read nothing, leave: the server must cope with a peer that vanishes.
            # Small enough to fit in the socket buffers, so a server that pushes back cannot
            # block this send.
            sock.sendall(payload[: rng.randint(1, min(size, 256 * KB))])
            return
        received, digest = echo_exchange(sock, payload, mode)
    if received != size or digest.digest() != hashlib.sha256(payload).digest():
        raise VerificationError("%s: sent %d bytes, got %d back%s" % (
            mode, size, received, "" if received != size else " with a different sha256"))


def traffic_whoami(rng, server):
    header, expected = random_header(rng)
    with connect(server.address("whoami", True), timeout=IO_TIMEOUT) as sock:
        sock.sendall(header)
        try:
            data = read_to_eof(sock)
        except ConnectionResetError:
            raise VerificationError("reset instead of the JSON line")
    try:
        document = json.loads(data)
    except ValueError:
        raise VerificationError("not one JSON line: %r" % data[:80])
    check_source(document, expected, "v%d" % (1 if header.startswith(b"PROXY") else 2))


def traffic_http(rng, server):
    proxied = rng.random() < 0.6
    with connect(server.address("http", proxied), timeout=IO_TIMEOUT) as sock:
        expected = None
        if proxied:
            header, expected = random_header(rng)
            sock.sendall(header)
        leftover = b""
        for number in range(rng.randint(1, 20)):
            sock.sendall(b"GET /%d HTTP/1.1\r\nHost: soak\r\n\r\n" % number)
            try:
                status, headers, body, leftover = read_http_response(sock, leftover)
            except ConnectionResetError:
                raise VerificationError("reset in a keep-alive session, request %d" % (number + 1))
            except ConnectionError as error:
                raise VerificationError("request %d: %s" % (number + 1, error))
            if status != 200:
                raise VerificationError("HTTP %d on request %d" % (status, number + 1))
            if headers.get("connection", "").lower() == "close":
                raise VerificationError("server ended the keep-alive session after request %d" % (number + 1))
            try:
                document = json.loads(body)
            except ValueError:
                raise VerificationError("body is not JSON: %r" % body[:80])
            if proxied:
                check_source(document, expected, "http")
            elif (document.get("source") or {}).get("ip") != "127.0.0.1":
                raise VerificationError("regular port reports source %s" % document.get("source"))


class Skip(Exception):
    """Not run this time; the worker picks another kind."""


SLOWLORIS_SLOTS = threading.BoundedSemaphore(5)


def traffic_slowloris(rng, server):
    # At most a few at a time: each one holds a worker for over 3 s.
    if not SLOWLORIS_SLOTS.acquire(blocking=False):
        raise Skip()
    try:
        service = rng.choice(["echo", "whoami", "http"])
        header, _ = random_header(rng)
        started = time.monotonic()
        with connect(server.address(service, True), timeout=IO_TIMEOUT) as sock:
            for byte in header[:-1]:
                try:
                    sock.sendall(bytes([byte]))
                except (ConnectionResetError, BrokenPipeError):
                    break
                readable, _, _ = select.select([sock], [], [], 1.0)
                if readable:
                    try:
                        data = sock.recv(4096)
                    except ConnectionResetError:
                        data = b""
                    if data:
                        raise VerificationError("server sent %r before a complete header" % data[:40])
                    break
            else:
                raise VerificationError("%d bytes over %.0f s and still open: no header timeout"
                                        % (len(header) - 1, time.monotonic() - started))
        elapsed = time.monotonic() - started
        if elapsed < HEADER_TIMEOUT - 0.5:
            raise VerificationError("closed after %.1f s, before the %d s header timeout" % (elapsed, HEADER_TIMEOUT))
        if elapsed > HEADER_TIMEOUT + 12:
            raise VerificationError("closed only after %.1f s (header timeout %d s)" % (elapsed, HEADER_TIMEOUT))
    finally:
        SLOWLORIS_SLOTS.release()


def traffic_untrusted(rng, server):
    # A burst: every connection from an untrusted address is closed before anything is read.
    for _ in range(rng.randint(5, 20)):
        service = rng.choice(["echo", "whoami", "http"])
        header, _ = random_header(rng)
        with connect(server.address(service, True), timeout=IO_TIMEOUT, source=UNTRUSTED_SOURCE) as sock:
            try:
                sock.sendall(header + (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" if service == "http" else b"hello\n"))
            except (ConnectionResetError, BrokenPipeError):
                continue
            closed_without_data(sock, 10)


def malformed_header(rng):
    """(name, bytes, half-close after sending)."""
    ip, port = random_source(rng)
    kind = rng.choice(["garbage", "truncated", "bad_signature", "oversized_v1", "oversized_v2", "bad_v1"])
    if kind == "garbage":
        data = bytes(rng.choice(b"ABCDEFGHIJKLMNOQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 \x00\xff")
                     for _ in range(rng.randint(16, 300)))
        return kind, data, False
    if kind == "truncated":
        header = v1_header(ip, port) if rng.random() < 0.5 else v2_header(ip, port)
        return kind, header[: rng.randrange(1, len(header) - 1)], True
    if kind == "bad_signature":
        header = bytearray(v2_header(ip, port))
        position = rng.randrange(0, len(V2_SIGNATURE))
        header[position] ^= 1 << rng.randrange(8)
        return kind, bytes(header), False
    if kind == "oversized_v1":
        # A v1 line may be 107 bytes; this one never ends.
        return kind, b"PROXY TCP4 " + b"1" * rng.randint(120, 2000), False
    if kind == "oversized_v2":
        # Declares more than proxy_max_header_size (4096 by default).
        length = rng.randint(5000, 65535)
        body = bytes(12) + bytes(rng.randint(0, 512))
        return kind, V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", length) + body, False
    return kind, b"PROXY TCP4 999.0.2.1 198.51.100.7 51234 443\r\n", False


def traffic_malformed(rng, server):
    name, data, half_close = malformed_header(rng)
    service = rng.choice(["echo", "whoami", "http"])
    with connect(server.address(service, True), timeout=IO_TIMEOUT) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (ConnectionResetError, BrokenPipeError):
            return
        try:
            closed_without_data(sock, HEADER_TIMEOUT + 12)
        except VerificationError as error:
            raise VerificationError("%s: %s" % (name, error))


def traffic_reset(rng, server):
    service = rng.choice(["echo", "whoami", "http"])
    proxied = rng.random() < 0.7
    sock = connect(server.address(service, proxied), timeout=IO_TIMEOUT)
    try:
        choice = rng.random()
        if proxied and choice < 0.3:
            header, _ = random_header(rng)
            sock.sendall(header[: rng.randrange(1, len(header))])
        elif choice < 0.7:
            if proxied:
                sock.sendall(random_header(rng)[0])
            sock.sendall(PAYLOAD[: rng.randint(1, 256 * KB)] if service == "echo" else b"GET / HTTP/1.1\r\n")
        time.sleep(rng.random() * 0.05)
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


def traffic_metrics(rng, server):
    with connect(server.address("metrics"), timeout=IO_TIMEOUT) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: soak\r\n\r\n")
        status, _, body, _ = read_http_response(sock)
    if status != 200 or b"netproxy_connections_accepted_total" not in body:
        raise VerificationError("HTTP %d, %d bytes, no netproxy_connections_accepted_total" % (status, len(body)))


TRAFFIC = {  # kind: (function, weight)
    "echo": (traffic_echo, 30),
    "whoami": (traffic_whoami, 18),
    "http": (traffic_http, 15),
    "slowloris": (traffic_slowloris, 3),
    "untrusted": (traffic_untrusted, 8),
    "malformed": (traffic_malformed, 12),
    "reset": (traffic_reset, 12),
    "metrics": (traffic_metrics, 2),
}


def worker(number, server, stats, stop):
    rng = random.Random(number * 7919 + int(time.time()))
    kinds = list(TRAFFIC)
    weights = [TRAFFIC[kind][1] for kind in kinds]
    while not stop.is_set():
        kind = rng.choices(kinds, weights)[0]
        try:
            TRAFFIC[kind][0](rng, server)
            stats.record(kind, "ok")
        except Skip:
            pass
        except VerificationError as error:
            stats.record(kind, "verification", str(error))
        except (OSError, ConnectionError) as error:
            stats.record(kind, "failed", "%s: %s" % (type(error).__name__, error))
        except Exception as error:  # a bug here must show, not silently kill the worker
            stats.record(kind, "failed", "script error %s: %s" % (type(error).__name__, error))


def run_traffic(server, stats, clients, seconds, sample=None):
    """Runs `clients` workers for `seconds`; calls sample() about once a second meanwhile.
    Returns the time the last worker finished."""
    stop = threading.Event()
    threads = [threading.Thread(target=worker, args=(n, server, stats, stop), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and server.alive():
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        if sample:
            sample()
    stop.set()
    stopped = time.monotonic()
    for thread in threads:
        # Bounded: every socket operation has a timeout; a slowloris lasts < 20 s.
        thread.join(max(1.0, stopped + 90 - time.monotonic()))
    stuck = sum(thread.is_alive() for thread in threads)
    if stuck:
        print("warning: %d worker(s) still busy 90 s after the stop" % stuck, flush=True)
    return time.monotonic()


# --- measuring ---------------------------------------------------------------------------------

def measure(server, states=False):
    figures = {"time": time.monotonic(), "fds": server.descriptors(), "rss_kib": server.rss_kib(),
               "cpu": server.cpu_seconds()}
    if states:  # reads every descriptor's link and the TCP tables: too slow for each sample
        figures["states"] = server.socket_states()
    return figures


def scrape_metrics(server):
    try:
        with connect(server.address("metrics"), timeout=10) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
            _, _, body, _ = read_http_response(sock)
        return [line for line in body.decode().splitlines() if line and not line.startswith("#")]
    except OSError as error:
        return ["(metrics unavailable: %s)" % error]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--netproxy", required=True, help="the netproxy binary")
    parser.add_argument("--duration", type=float, default=600, help="seconds of traffic (default 600)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent client threads (default 50)")
    parser.add_argument("--warmup", type=float, default=5, help="seconds of traffic before the start figures")
    parser.add_argument("--settle", type=float, default=5, help="quiet seconds before each measurement")
    args = parser.parse_args()

    config = {
        "interfaces": ["127.0.0.1"],
        "echo_ports": [0], "whoami_ports": [0], "http_ports": [0],
        "proxy_port_mappings": {"0": "echo"},
        "proxy_trusted_proxies": ["127.0.0.1"],
        "proxy_header_timeout": HEADER_TIMEOUT,
        "metrics_port": 0,
        "shutdown_grace_period": 2,
    }
    # Three PROXY ports, all bound to free ports: the mappings need distinct keys, so ask for
    # three fixed free ports instead of 0.
    ports = free_ports(3)
    config["proxy_port_mappings"] = {str(ports[0]): "echo", str(ports[1]): "whoami", str(ports[2]): "http"}

    stats = Stats()
    server = NetProxyServer(args.netproxy, config)
    failures = []
    try:
        server.wait_for_banner()
        print("netproxy pid %d, %d clients, %.0f s of traffic; listeners: %s" % (
            server.pid, args.clients, args.duration,
            ", ".join("%s%s %s:%d" % (s, " (PROXY)" if p else "", *server.address(s, p))
                      for (s, p) in sorted(server.listeners))), flush=True)

        run_traffic(server, stats, args.clients, args.warmup)
        time.sleep(args.settle)
        if not server.alive():
            raise RuntimeError("the server died during the warm-up")
        start = measure(server, states=True)
        samples = [dict(start, elapsed=0.0, ops=stats.total)]
        timeline = [samples[0]]

        def sample():
            if not server.alive():
                return
            now = measure(server)
            now["elapsed"] = now["time"] - start["time"]
            now["ops"] = stats.total
            samples.append(now)
            if now["elapsed"] - timeline[-1]["elapsed"] >= 10 - 0.5:
                timeline.append(now)

        stopped = run_traffic(server, stats, args.clients, args.duration, sample)
        traffic_cpu = server.cpu_seconds() if server.alive() else samples[-1]["cpu"]
        traffic_seconds = stopped - start["time"]
        time.sleep(args.settle)
        alive = server.alive()
        end = measure(server, states=True) if alive else None
    except Exception as error:
        print("soak aborted: %s: %s" % (type(error).__name__, error))
        print("server stderr tail:\n" + server.stderr_tail(10))
        server.stop()
        return 2

    print()
    print("timeline (every ~10 s):")
    print("  %7s %6s %9s %7s %9s" % ("elapsed", "fds", "RSS MB", "CPU %", "ops"))
    for previous, row in zip([None] + timeline[:-1], timeline):
        cpu = "" if previous is None else "%.0f" % ((row["cpu"] - previous["cpu"]) * 100 / max(0.001, row["time"] - previous["time"]))
        print("  %6.0fs %6d %9.1f %7s %9d" % (row["elapsed"], row["fds"], row["rss_kib"] / 1024, cpu, row["ops"]))

    peak_rss = max([s["rss_kib"] for s in samples] + ([end["rss_kib"]] if end else []))
    peak_fds = max([s["fds"] for s in samples] + ([end["fds"]] if end else []))
    print()
    print("server resources (start: after %.0f s warm-up and %.0f s quiet; end: %.0f s after the traffic stopped)"
          % (args.warmup, args.settle, args.settle))
    print("  %-22s %12s %12s %12s" % ("", "start", "end", "peak"))
    print("  %-22s %12d %12s %12d" % ("descriptors", start["fds"], end["fds"] if end else "dead", peak_fds))
    print("  %-22s %12.1f %12s %12.1f" % ("RSS MB", start["rss_kib"] / 1024,
                                         "%.1f" % (end["rss_kib"] / 1024) if end else "dead", peak_rss / 1024))
    print("  TCP sockets at start: %s" % fmt_states(start["states"]))
    print("  TCP sockets at end:   %s" % (fmt_states(end["states"]) if end else "dead"))
    cpu_used = traffic_cpu - start["cpu"]
    print("  CPU: %.1f s over %.0f s of traffic = %.0f%% of one core on average%s" % (
        cpu_used, traffic_seconds, cpu_used * 100 / max(0.001, traffic_seconds),
        "; %.2f s more while quiet" % (end["cpu"] - traffic_cpu) if end else ""))

    print()
    print("traffic:")
    print("  %-10s %9s %9s %13s" % ("kind", "ok", "failed", "verification"))
    for kind in TRAFFIC:
        counts = stats.counts[kind]
        print("  %-10s %9d %9d %13d" % (kind, counts["ok"], counts["failed"], counts["verification"]))
    total_failed = sum(c["failed"] for c in stats.counts.values())
    if stats.errors:
        print("failed operations (network errors and timeouts, by message):")
        for message, count in stats.errors.most_common(15):
            print("  %6d  %s" % (count, message))
    if stats.verifications:
        print("verification failures (%d; first 20 below):" % len(stats.verifications))
        for message in stats.verifications[:20]:
            print("  " + message)
        # The same failure with other numbers is one pattern.
        patterns = collections.Counter(re.sub(r"\d+(\.\d+)?", "N", m) for m in stats.verifications)
        print("  by pattern:")
        for pattern, count in patterns.most_common(10):
            print("  %6d  %s" % (count, pattern))

    print()
    print("/metrics at the end:")
    for line in scrape_metrics(server) if alive else ["(server dead)"]:
        print("  " + line)

    if stats.verifications:
        failures.append("%d verification failure(s)" % len(stats.verifications))
    if not alive:
        failures.append("the server died (exit %s); stderr tail:\n%s" % (server.process.returncode, server.stderr_tail(10)))
    elif end["fds"] > start["fds"] + 2:
        failures.append("descriptors grew from %d to %d" % (start["fds"], end["fds"]))
    server.stop()
    print()
    print("result: %s (%d operations, %d failed on the network)" % (
        "FAIL: " + "; ".join(failures) if failures else "PASS", stats.total, total_failed))
    return 1 if failures else 0


def fmt_states(states):
    return ",".join("%s=%d" % (state.replace("ESTABLISHED", "ESTAB"), count)
                    for state, count in sorted(states.items()) if state != "LISTEN") or "-"


def free_ports(count):
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


if __name__ == "__main__":
    sys.exit(main())
