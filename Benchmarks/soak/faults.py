#!/usr/bin/env python3
"""Measures known faults of a `netproxy` binary, one probe at a time.

    python3 Benchmarks/soak/faults.py --netproxy .build/release/netproxy [--only NAME] [--json]

Every probe starts its own server (own temporary configuration, ports chosen by the server and
read from its banner), stops it by PID, and stays under a minute. Each prints one line of text;
the summary follows as JSON (with --json, only the JSON is written to stdout).

Probes: fd_leak, halfclose_loss, unbounded_memory, accept_busy_loop, sighup, lenient_config;
and attacks on the deadlines and budgets (idle and TLS handshake timeouts, connection limits):
silent_after_header, one_source_flood, tls_slow_handshake, http_idle, forward_target_silent,
forward_connect_abandoned, forward_connect_flood, forward_blast_then_close, multiplex_silent,
per_source_limit. Those set deadlines of 2 s and limits of their own; a binary that refuses
those keys as unknown runs without them ("new_keys": false), and each result has "holds", the
probe's verdict (defined in a comment at the start of each probe).
Linux only (/proc). Standard library only; the TLS probes also need the openssl command."""

import argparse
import errno
import hashlib
import json
import os
import random
import re
import resource
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netproxy_process import (NetProxyServer, ServerError, connect, default_proxy_header,  # noqa: E402
                              read_http_response, read_to_eof, scrape_metrics, start_server, v1_header)

LOOPBACK = ["127.0.0.1"]
MB = 1024 * 1024
ARGS = argparse.Namespace(json=False)  # replaced by the command line in main()


def base_config(**keys):
    config = {"interfaces": LOOPBACK, "shutdown_grace_period": 2}
    config.update(keys)
    return config


def log(text):
    print(text, file=sys.stderr if ARGS.json else sys.stdout, flush=True)


# --- 1. fd_leak ----------------------------------------------------------------------------------

def http_get(address, path="/", proxy_header=b""):
    """One request on a fresh connection: a keep-alive client that reads its response and closes."""
    with connect(address, timeout=10) as sock:
        sock.sendall(proxy_header + ("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
        status, _, body, _ = read_http_response(sock)
        if status != 200:
            raise ConnectionError("HTTP %d" % status)
        return body


def probe_fd_leak(binary):
    config = base_config(http_ports=[0], proxy_port_mappings={"0": "http"}, metrics_port=0)
    with NetProxyServer(binary, config) as server:
        server.wait_for_banner()
        regular, proxied, metrics = server.address("http"), server.address("http", True), server.address("metrics")
        time.sleep(0.5)
        baseline = server.descriptors()
        failures = 0
        for address, path, header, count in ((regular, "/", b"", 100), (proxied, "/", default_proxy_header(), 100),
                                             (metrics, "/metrics", b"", 50)):
            for _ in range(count):
                try:
                    http_get(address, path, header)
                except OSError:
                    failures += 1
        time.sleep(2)
        after = server.descriptors()
        states = server.socket_states()
    result = {"baseline": baseline, "after": after, "leaked": after - baseline, "requests": 250,
              "request_failures": failures, "close_wait": states.get("CLOSE_WAIT", 0), "socket_states": states}
    log("fd_leak: baseline %d, after %d, leaked %d (250 requests, %d failed); CLOSE-WAIT sockets %d"
        % (baseline, after, after - baseline, failures, result["close_wait"]))
    return result


# --- 2. halfclose_loss ---------------------------------------------------------------------------

STREAM_BYTES = 100 * 1000 * 1000
CHUNK = 64 * 1024


def pattern_chunks(seed, total):
    """Deterministic pseudo-random bytes, in 64 KiB chunks."""
    generator = random.Random(seed)
    sent = 0
    while sent < total:
        size = min(CHUNK, total - sent)
        yield generator.randbytes(size)
        sent += size


def echo_stream(address, header, seed, total, timeout, pause=0.0):
    """Streams `total` bytes with a concurrent reader, half-closes, reads to EOF.

    `pause`: seconds the reader waits after each read of up to 64 KiB, for a client whose
    downstream is slower than its upstream (0: it reads as fast as it can)."""
    sock = connect(address, timeout=timeout)
    received = {"bytes": 0, "sha": hashlib.sha256(), "end": None}

    def reader():
        try:
            while True:
                chunk = sock.recv(CHUNK if pause else 1 << 20)
                if not chunk:
                    received["end"] = "EOF"
                    return
                received["bytes"] += len(chunk)
                received["sha"].update(chunk)
                if pause:
                    time.sleep(pause)
        except OSError as error:
            received["end"] = errno.errorcode.get(error.errno, type(error).__name__) if error.errno else type(error).__name__

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    sent, sent_sha, send_error = 0, hashlib.sha256(), None
    try:
        if header:
            sock.sendall(header)
        for chunk in pattern_chunks(seed, total):
            sock.sendall(chunk)
            sent += len(chunk)
            sent_sha.update(chunk)
        sock.shutdown(socket.SHUT_WR)
    except OSError as error:
        send_error = errno.errorcode.get(error.errno, type(error).__name__) if error.errno else type(error).__name__
    thread.join(timeout)
    if thread.is_alive():
        received["end"] = "timeout"
    sock.close()
    return {"sent": sent, "received": received["bytes"], "lost": sent - received["bytes"],
            "identical": sent_sha.hexdigest() == received["sha"].hexdigest() and send_error is None,
            "end": received["end"], "send_error": send_error}


READERS = {"prompt": 0.0, "paced": 0.001}  # paced: at most ~64 MB/s, slower than the sender


def probe_halfclose_loss(binary):
    # A prompt reader keeps the server's socket buffers nearly empty, so at the half-close there
    # is little or nothing queued to lose; a paced reader leaves echoed bytes queued in the server
    # when its FIN arrives, which is when a close-on-EOF drops them.
    config = base_config(echo_ports=[0], proxy_port_mappings={"0": "echo"})
    runs = {(port, reader): [] for port in ("regular", "proxy") for reader in READERS}
    deadline = time.monotonic() + 55
    skipped = 0
    with NetProxyServer(binary, config) as server:
        server.wait_for_banner()
        targets = {"regular": (server.address("echo"), b""),
                   "proxy": (server.address("echo", True), default_proxy_header())}
        for run in range(5):
            for (port, reader), results in runs.items():
                left = deadline - time.monotonic()
                if left < 5:
                    skipped += 1
                    continue
                address, header = targets[port]
                results.append(echo_stream(address, header, seed=run, total=STREAM_BYTES,
                                           timeout=min(25, left), pause=READERS[reader]))
    summary = {}
    for (port, reader), results in runs.items():
        summary["%s/%s" % (port, reader)] = {
            "runs": len(results),
            "lost_bytes": [r["lost"] for r in results],
            "ends": [r["end"] if not r["send_error"] else "%s (send: %s)" % (r["end"], r["send_error"]) for r in results],
            "intact_runs": sum(1 for r in results if r["identical"] and r["lost"] == 0 and r["end"] == "EOF"),
        }
    lines = ["  %s reader: %d/%d intact, lost bytes %s, ends %s" % (
        key, s["intact_runs"], s["runs"], s["lost_bytes"], ",".join(map(str, s["ends"]))) for key, s in summary.items()]
    log("halfclose_loss (100 MB per run, 5 runs per port and reader%s):\n%s"
        % (", %d runs skipped for time" % skipped if skipped else "", "\n".join(lines)))
    return {"stream_bytes": STREAM_BYTES, "paced_reader_pause_s": READERS["paced"], "skipped_runs": skipped,
            "runs": summary, "details": {"%s/%s" % key: value for key, value in runs.items()}}


# --- 3. unbounded_memory -------------------------------------------------------------------------

def probe_unbounded_memory(binary):
    limit = 1 << 30
    config = base_config(echo_ports=[0])
    with NetProxyServer(binary, config) as server:
        server.wait_for_banner()
        time.sleep(0.5)
        rss_before = server.rss_kib()
        sock = connect(server.address("echo"), timeout=10)
        # A send timeout, as SO_SNDTIMEO would: the client stops once a send blocks for 3 s.
        sock.settimeout(3)
        block = random.Random(3).randbytes(1 << 20)
        sent, stop_reason, deadline = 0, "1 GiB sent", time.monotonic() + 40
        rss_peak = rss_before
        while sent < limit:
            if time.monotonic() > deadline:
                stop_reason = "40 s budget"
                break
            try:
                sent += sock.send(block[: min(len(block), limit - sent)])
            except socket.timeout:
                stop_reason = "send blocked for 3 s"
                break
            except OSError as error:
                stop_reason = "send failed: %s" % error
                break
            if sent % (64 * MB) < len(block):
                rss_peak = max(rss_peak, server.rss_kib())
        time.sleep(1)
        rss_after = server.rss_kib()
        rss_peak = max(rss_peak, rss_after)
        # A reset, so the server does not spend time echoing what it holds to a reader that never
        # reads.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
        time.sleep(2)
        rss_closed = server.rss_kib() if server.alive() else None
        alive = server.alive()
        # Whether the memory is still held by an open connection or only not given back.
        states_closed = server.socket_states() if alive else {}
    growth = (rss_after - rss_before) / 1024
    log("unbounded_memory: client sent %.1f MB without reading (%s); server RSS %.1f -> %.1f MB (+%.1f MB, peak %.1f MB); "
        "2 s after the client reset: %s (server TCP sockets: %s)"
        % (sent / MB, stop_reason, rss_before / 1024, rss_after / 1024, growth, rss_peak / 1024,
           "%.1f MB" % (rss_closed / 1024) if rss_closed is not None else "server gone",
           ", ".join("%s %d" % item for item in sorted(states_closed.items()))))
    return {"sent_bytes": sent, "stop_reason": stop_reason, "rss_before_mb": round(rss_before / 1024, 1),
            "rss_after_mb": round(rss_after / 1024, 1), "rss_growth_mb": round(growth, 1),
            "rss_peak_mb": round(rss_peak / 1024, 1),
            "rss_after_close_mb": round(rss_closed / 1024, 1) if rss_closed is not None else None,
            "socket_states_after_close": states_closed,
            "server_alive": alive}


# --- 4. accept_busy_loop -------------------------------------------------------------------------

def strace_accept4(pid, seconds):
    """accept4 calls and errors over `seconds`, from strace -c; None when strace is unusable."""
    if not shutil.which("strace"):
        return None
    process = subprocess.Popen(["strace", "-f", "-c", "-e", "trace=accept4", "-p", str(pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(seconds)
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    text = err.decode("utf-8", "replace")
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[-1] == "accept4":
            # % time, seconds, usecs/call, calls, [errors,] syscall (errors is blank when 0)
            calls = int(fields[3])
            errors = int(fields[4]) if len(fields) > 5 else 0
            return {"calls": calls, "errors": errors, "seconds": seconds}
    if "attach" in text.lower() and ("not permitted" in text.lower() or "denied" in text.lower()):
        return {"unavailable": text.strip().splitlines()[0]}
    return {"calls": 0, "errors": 0, "seconds": seconds}


def echo_once(address, payload=b"ping\n", timeout=5):
    try:
        with connect(address, timeout=timeout) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            return read_to_eof(sock) == payload
    except OSError:
        return False


def open_many(address, count, wait):
    """Opens `count` connections at once (non-blocking): once the listen backlog is full, the
    kernel drops SYNs, and one blocking connect after another would take minutes."""
    sockets = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(address)
        sockets.append(sock)
    pending = set(sockets)
    deadline = time.monotonic() + wait
    while pending and time.monotonic() < deadline:
        _, writable, _ = select.select([], list(pending)[:500], [], 0.2)
        pending.difference_update(writable)
    failures = len(pending) + sum(1 for sock in sockets if sock not in pending
                                  and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0)
    return sockets, failures


def probe_accept_busy_loop(binary):
    config = base_config(echo_ports=[0])
    with NetProxyServer(binary, config, ulimit_files=64) as server:
        server.wait_for_banner()
        address = server.address("echo")
        time.sleep(0.5)
        idle_cpu_start = server.cpu_seconds()
        time.sleep(1)
        idle_percent = (server.cpu_seconds() - idle_cpu_start) * 100
        clients, connect_failures = open_many(address, 200, wait=5)
        descriptors = server.descriptors()
        cpu_start, wall_start = server.cpu_seconds(), time.monotonic()
        time.sleep(3)
        cpu_percent = (server.cpu_seconds() - cpu_start) * 100 / (time.monotonic() - wall_start)
        accept4 = strace_accept4(server.pid, 3)
        for client in clients:
            client.close()
        time.sleep(2)
        resumed = echo_once(address)
        # The backlog may take a moment to drain; a second chance tells "slow" from "stuck".
        resumed_later = resumed or (time.sleep(5) or echo_once(address))
        alive = server.alive()
    if accept4 is None:
        strace_text = "strace not installed"
    elif "unavailable" in accept4:
        strace_text = "strace: " + accept4["unavailable"]
    else:
        strace_text = "accept4: %d calls, %d failed in %d s" % (accept4["calls"], accept4["errors"], accept4["seconds"])
    log("accept_busy_loop: 200 clients held (%d not connected) at ulimit -n 64 (server fds %d): CPU %.0f%% (idle before %.0f%%); "
        "%s; resumes serving: %s%s"
        % (connect_failures, descriptors, cpu_percent, idle_percent, strace_text, "yes" if resumed else "no",
           "" if resumed or not resumed_later else " (yes after 7 s)"))
    return {"clients": len(clients), "connect_failures": connect_failures, "server_descriptors": descriptors,
            "cpu_percent": round(cpu_percent, 1), "idle_cpu_percent": round(idle_percent, 1), "accept4": accept4,
            "resumed": resumed, "resumed_after_7s": resumed_later, "server_alive": alive}


# --- 5. sighup -----------------------------------------------------------------------------------

def stream_works(sock, tag):
    try:
        sock.sendall(tag)
        data = b""
        while len(data) < len(tag):
            chunk = sock.recv(65536)
            if not chunk:
                return False
            data += chunk
        return data == tag
    except OSError:
        return False


def signal_case(binary, number, crash_check):
    config = base_config(echo_ports=[0])
    with NetProxyServer(binary, config) as server:
        server.wait_for_banner()
        sock = connect(server.address("echo"), timeout=3)
        before = stream_works(sock, b"before\n")
        server.signal(number)
        time.sleep(1)
        alive = server.alive()
        after = stream_works(sock, b"after\n")
        if crash_check:
            # The runtime's crash report (a symbolicated backtrace) takes a while to write; the
            # process ends only after it.
            try:
                server.process.wait(20)
            except subprocess.TimeoutExpired:
                pass
        sock.close()
        exit_code = server.process.poll()
        text = server.stderr_text()
        tail = [line for line in text.splitlines() if line.strip()][-3:]
        crash_lines = [line.strip() for line in text.splitlines() if re.search("crash", line, re.IGNORECASE)]
    return {"alive_after_1s": alive, "stream_before": before, "stream_after": after,
            "exit_code": exit_code, "stderr_tail": tail, "stderr_lines": len(text.splitlines()),
            "stderr_mentions_crash": bool(crash_lines), "crash_line": crash_lines[0] if crash_lines else None}


def probe_sighup(binary):
    hup = signal_case(binary, signal.SIGHUP, crash_check=False)
    quit_ = signal_case(binary, signal.SIGQUIT, crash_check=True)
    # SIGTERM with an echo connection open: the host drains it for shutdown_grace_period (2 s).
    config = base_config(echo_ports=[0])
    with NetProxyServer(binary, config) as server:
        server.wait_for_banner()
        sock = connect(server.address("echo"), timeout=3)
        stream_works(sock, b"before\n")
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        try:
            server.process.wait(20)
        except subprocess.TimeoutExpired:
            pass
        term = {"exit_code": server.process.poll(), "seconds_to_exit": round(time.monotonic() - started, 2),
                "grace_period_s": config["shutdown_grace_period"]}
        sock.close()

    def describe(code):
        if code is None:
            return "still running"
        return "exit %d" % code if code >= 0 else "killed by %s" % signal.Signals(-code).name
    log("sighup: SIGHUP -> alive %s, stream still echoes %s (%s), stderr tail %r; "
        "SIGQUIT -> alive after 1 s %s, stream still echoes %s, then %s, stderr mentions crash %s (%r, %d stderr lines); "
        "SIGTERM (one echo connection open, grace period 2 s) -> %s after %.1f s"
        % ("yes" if hup["alive_after_1s"] else "no", "yes" if hup["stream_after"] else "no", describe(hup["exit_code"]),
           " | ".join(hup["stderr_tail"][-1:]), "yes" if quit_["alive_after_1s"] else "no",
           "yes" if quit_["stream_after"] else "no", describe(quit_["exit_code"]),
           "yes" if quit_["stderr_mentions_crash"] else "no", quit_["crash_line"], quit_["stderr_lines"],
           describe(term["exit_code"]), term["seconds_to_exit"]))
    return {"sighup": hup, "sigquit": quit_, "sigterm": term}


# --- 6. lenient_config ---------------------------------------------------------------------------

LENIENT_CASES = {
    "trailing_comma": '{"echo_ports": [0],}',
    "duplicate_key": '{"echo_ports":[0], "proxy_trusted_proxies": ["0.0.0.0/0"], "proxy_trusted_proxies": ["127.0.0.1"]}',
    "duplicate_nested_key": '{"proxy_port_mappings": {"0": "echo", "0": "whoami"}}',
}
# Which of two duplicated trust lists is in force: the second case above has no PROXY port to
# tell, so this one adds a whoami PROXY port and connects from 127.0.0.9, which only the first
# list (0.0.0.0/0) trusts.
DUPLICATE_TRUST = ('{"whoami_ports": [], "proxy_port_mappings": {"0": "whoami"}, '
                   '"proxy_trusted_proxies": ["0.0.0.0/0"], "proxy_trusted_proxies": ["127.0.0.1"]}')


def duplicate_trust_winner(binary):
    server = NetProxyServer(binary, None, raw_config=DUPLICATE_TRUST)
    try:
        server.wait_for_banner(10)
        with connect(server.address("whoami", True), timeout=5, source="127.0.0.9") as sock:
            sock.sendall(default_proxy_header())
            answer = read_to_eof(sock)
        return "first (0.0.0.0/0: 127.0.0.9 served)" if answer else "last (127.0.0.1: 127.0.0.9 refused)"
    except (OSError, ServerError) as error:
        return "unknown (%s)" % error
    finally:
        server.stop()


def probe_lenient_config(binary):
    results = {}
    for name, text in LENIENT_CASES.items():
        server = NetProxyServer(binary, None, raw_config=text)
        try:
            server.process.wait(3)
        except subprocess.TimeoutExpired:
            pass
        running = server.alive()
        listeners = []
        if running:
            try:
                listeners = sorted("%s%s" % (service, " (PROXY)" if proxy else "")
                                   for service, proxy in server.wait_for_banner(5))
            except ServerError:
                pass
        code = server.stop()
        lines = [line for line in server.stderr_text().splitlines() if line.strip()]
        results[name] = {"config": text, "verdict": "accepted" if running else "refused",
                         "exit_code": None if running else code, "listeners": listeners,
                         "first_stderr_line": lines[0] if lines else ""}
    if results["duplicate_key"]["verdict"] == "accepted":
        results["duplicate_key"]["trust_list_in_force"] = duplicate_trust_winner(binary)
    log("lenient_config: " + "; ".join(
        "%s %s%s%s%s" % (name, r["verdict"],
                       " (listeners: %s)" % ", ".join(r["listeners"]) if r["listeners"] else "",
                       ", trust list in force: %s" % r["trust_list_in_force"] if "trust_list_in_force" in r else "",
                       ", stderr: %r" % r["first_stderr_line"] if r["first_stderr_line"] else "")
        for name, r in results.items()))
    return results


# --- deadlines and budgets: shared pieces --------------------------------------------------------
#
# The probes below attack the host with connections that say nothing, say it too slowly, or leave
# at an awkward moment. Each sets short deadlines (2 s) and small budgets; a binary that refuses
# those keys as unknown (a build before them) runs without them, and the result says
# "new_keys": false. "holds" is each probe's verdict, defined next to it.

SLACK = 3.0  # seconds past a deadline before a connection still open counts against the server
DEADLINE = 2  # idle_timeout, tls_handshake_timeout
CONNECT_TIMEOUT = 3
PER_SOURCE = 100
MAX_PENDING_CONNECTS = 50
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def raise_descriptor_limit(wanted=8192):
    """The probes hold well over a thousand sockets of their own."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def spread_source(network, index):
    """A loopback address of its own for client `index` (127.<network>.x.y), so that a limit per
    source never applies where a probe does not mean to test it."""
    index %= 250 * 250
    return "127.%d.%d.%d" % (network, index // 250, 1 + index % 250)


def open_clients(address, count, source=None, first_bytes=b"", wait=5.0):
    """Opens `count` connections at once (non-blocking) and sends `first_bytes` on each one that
    connects. `source` and `first_bytes` may be functions of the client's index. Returns
    (connected sockets, failures)."""
    sockets = []
    failures = 0
    for index in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        local = source(index) if callable(source) else source
        try:
            if local:
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((local, 0))
            code = sock.connect_ex(address)
        except OSError:
            code = -1
        if code not in (0, errno.EINPROGRESS):
            failures += 1
            sock.close()
            continue
        sockets.append((index, sock))
    poller = select.poll()
    pending = {}
    for index, sock in sockets:
        poller.register(sock, select.POLLOUT)
        pending[sock.fileno()] = sock
    deadline = time.monotonic() + wait
    while pending and time.monotonic() < deadline:
        for fd, _ in poller.poll(200):
            poller.unregister(fd)
            pending.pop(fd, None)
    connected = []
    for index, sock in sockets:
        if sock.fileno() in pending or sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
            failures += 1
            sock.close()
            continue
        payload = first_bytes(index) if callable(first_bytes) else first_bytes
        if payload:
            try:
                sock.send(payload)
            except OSError:
                pass  # closed by the server already: counted as closed below
        connected.append(sock)
    return connected, failures


def server_closed(sock):
    """Whether the server has closed the connection (EOF or a reset), after reading whatever it
    sent first; False while it holds it."""
    sock.setblocking(False)  # a socket with a timeout would wait for data before the recv
    try:
        while True:
            if not sock.recv(65536, socket.MSG_DONTWAIT):
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def count_open(sockets):
    return sum(1 for sock in sockets if not server_closed(sock))


def close_all(sockets, reset=False):
    for sock in sockets:
        try:
            if reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        except OSError:
            pass


def sleep_until(moment):
    time.sleep(max(0.0, moment - time.monotonic()))


class Trickler:
    """Sends each socket's payload one byte at a time, one byte every `interval` seconds, from a
    thread, until stopped or the payload ends."""

    def __init__(self, pairs, interval=2.0):
        self.pairs = [(sock, payload) for sock, payload in pairs]
        self.interval = interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        position = 0
        while not self.stopped.is_set():
            for sock, payload in self.pairs:
                if position < len(payload):
                    try:
                        sock.send(payload[position:position + 1], socket.MSG_DONTWAIT)
                    except OSError:
                        pass
            position += 1
            self.stopped.wait(self.interval)

    def stop(self):
        self.stopped.set()
        self.thread.join(5)


class HoldingTarget:
    """A forward target that accepts every connection, then never reads, writes or closes."""

    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1024)
        self.listener.settimeout(0.2)
        self.address = self.listener.getsockname()
        self.accepted = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopped.is_set():
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            self.accepted.append(sock)

    def close(self):
        self.stopped.set()
        self.thread.join(5)
        self.listener.close()
        close_all(self.accepted)


class BlackholeTarget:
    """A forward target that never answers a SYN: a listening socket with a backlog of 0 whose
    accept queue is filled and never accepted from, so the kernel drops every further SYN and a
    connect to it stays in SYN_SENT until its timeout."""

    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.address = self.listener.getsockname()
        self.fillers, _ = open_clients(self.address, 4, wait=1.0)
        # Verified, not assumed: a test connect must still be waiting after 1 s.
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(self.address)
            self.verified = False
        except socket.timeout:
            self.verified = True
        except OSError:
            self.verified = False
        finally:
            probe.close()

    def close(self):
        close_all(self.fillers)
        self.listener.close()


def self_signed_certificate(directory):
    certificate, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                    "-days", "1", "-keyout", key, "-out", certificate],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    return certificate, key


def client_hello():
    """The bytes of a TLS ClientHello, as a client sends them first."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def proxy_header_from(network, index):
    """A v1 header whose claimed source is of its own per client (10.<network>.x.y)."""
    return v1_header("10.%d.%d.%d" % (network, index // 250, 1 + index % 250), 40000 + index % 20000)


def metrics_of(server):
    try:
        return scrape_metrics(server.address("metrics"))
    except ServerError:
        return None


def tls_config(certificate, key, **keys):
    config = base_config(echo_ports=[], proxy_port_mappings={"0": "echo"}, proxy_tls_ports=[0],
                         proxy_tls_certificate=certificate, proxy_tls_key=key, metrics_port=0,
                         idle_timeout=DEADLINE, tls_handshake_timeout=DEADLINE,
                         max_connections_per_source=PER_SOURCE,
                         proxy_port_options={"0": {"tls_handshake_timeout": DEADLINE, "idle_timeout": DEADLINE,
                                                   "max_connections_per_source": PER_SOURCE}})
    config.update(keys)
    return config


# --- 7. silent_after_header ----------------------------------------------------------------------

def probe_silent_after_header(binary):
    # holds: no case has a connection open at the deadline + 3 s (the multiplexer's deadline is
    # detect_timeout 1 s + idle 2 s). Sources are spread over addresses of their own (127.0.N.x,
    # or 10.N.x.y in the header), so that the limit per source (100) never closes a client here.
    count = 200
    config = base_config(
        echo_ports=[0], mux_ports=[0], metrics_port=0, proxy_port_mappings={"0": "echo"},
        proxy_direct_clients=["127.0.0.77", "127.77.0.0/16"],
        idle_timeout=DEADLINE, echo_idle_timeout=DEADLINE, mux_idle_timeout=DEADLINE,
        max_connections_per_source=PER_SOURCE,
        proxy_port_options={"0": {"idle_timeout": DEADLINE, "max_connections_per_source": PER_SOURCE}},
        multiplex_services={"mux": {"default": "echo", "detect_timeout": 1, "idle_timeout": DEADLINE}})
    directory = tempfile.mkdtemp(prefix="netproxy-faults-")
    servers = []
    cases = {}
    try:
        certificate, key = self_signed_certificate(directory)
        server, new_keys = start_server(binary, config)
        servers.append(server)
        tls_server, tls_new_keys = start_server(binary, tls_config(certificate, key))
        servers.append(tls_server)
        time.sleep(0.5)
        baseline = {"plain": server.descriptors(), "tls": tls_server.descriptors()}
        plans = {
            "regular_echo": (server.address("echo"), lambda i: spread_source(70, i), b""),
            "proxy_after_header": (server.address("echo", True), "127.0.0.1", lambda i: proxy_header_from(71, i)),
            "direct_on_proxy_port": (server.address("echo", True), lambda i: spread_source(77, i) if i else "127.0.0.77", b""),
            "multiplex_to_default": (server.address("mux"), lambda i: spread_source(72, i), b""),
            "tls_after_header": (tls_server.address("echo", True), "127.0.0.1", lambda i: proxy_header_from(73, i)),
        }
        for name, (address, source, first) in plans.items():
            sockets, failures = open_clients(address, count, source, first)
            cases[name] = {"sockets": sockets, "connect_failures": failures}
        started = time.monotonic()
        sleep_until(started + 0.5)
        for case in cases.values():
            case["open_at_0_5s"] = count_open(case["sockets"])
        held = {"plain": server.descriptors(), "tls": tls_server.descriptors()}
        sleep_until(started + 1 + DEADLINE + SLACK)
        for case in cases.values():
            case["open_after_deadline"] = count_open(case["sockets"])
        after = {"plain": server.descriptors(), "tls": tls_server.descriptors()}
        metrics = {"plain": metrics_of(server), "tls": metrics_of(tls_server)}
    finally:
        for case in cases.values():
            close_all(case["sockets"])
        for server in servers:
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    for case in cases.values():
        case["connected"] = len(case.pop("sockets"))
        case["holds"] = case["open_after_deadline"] == 0
    result = {"new_keys": new_keys and tls_new_keys, "clients_per_case": count,
              "checked_after_s": 1 + DEADLINE + SLACK, "cases": cases,
              "server_descriptors": {"baseline": baseline, "with_clients": held, "after_deadline": after},
              "metrics": metrics, "holds": all(case["holds"] for case in cases.values())}
    log("silent_after_header (%d silent clients per case, deadlines 2 s, checked at %.0f s): %s; "
        "server fds %d -> %d -> %d (TLS server %d -> %d -> %d)%s"
        % (count, result["checked_after_s"],
           ", ".join("%s %d/%d open" % (name, c["open_after_deadline"], c["connected"]) for name, c in cases.items()),
           baseline["plain"], held["plain"], after["plain"], baseline["tls"], held["tls"], after["tls"],
           "" if result["new_keys"] else " [new keys refused]"))
    return result


# --- 8. one_source_flood -------------------------------------------------------------------------

def probe_one_source_flood(binary):
    # holds: the legitimate client gets all 7 echoes, and the flooding source holds no more than
    # max_connections_per_source (100) of the server's sockets. idle_timeout is 30 s here, so that
    # what is measured is the budget, not the idle deadline.
    flood = 1200
    config = base_config(echo_ports=[0], metrics_port=0, idle_timeout=30, echo_idle_timeout=30,
                         max_connections_per_source=PER_SOURCE)
    server, new_keys = start_server(binary, config, ulimit_files=1024)
    sockets = []
    try:
        address = server.address("echo")
        time.sleep(0.5)
        baseline = server.descriptors()
        sockets, failures = open_clients(address, flood, "127.0.0.66", wait=5)
        time.sleep(1)
        client_open = count_open(sockets)
        held = sum(count for state, count in server.socket_states("127.0.0.66").items() if state != "LISTEN")
        descriptors = server.descriptors()
        legit = 0
        for _ in range(7):
            legit += echo_once(address, timeout=1)
        metrics = metrics_of(server)
        alive = server.alive()
    finally:
        close_all(sockets)
        server.stop()
    result = {"new_keys": new_keys, "flood_sockets": flood, "connected": len(sockets), "connect_failures": failures,
              "open_at_client": client_open, "held_by_server": held, "server_descriptors": descriptors,
              "baseline_descriptors": baseline, "legit_successes": legit, "legit_attempts": 7, "server_alive": alive,
              "metrics": metrics}
    result["holds"] = legit == 7 and held <= PER_SOURCE
    log("one_source_flood (ulimit -n 1024, %d sockets from 127.0.0.66): %d connected, %d held by the server "
        "(fds %d, baseline %d); legitimate client from 127.0.0.1: %d/7 echoes%s"
        % (flood, len(sockets), held, descriptors, baseline, legit, "" if new_keys else " [new keys refused]"))
    return result


# --- 9. tls_slow_handshake -----------------------------------------------------------------------

def probe_tls_slow_handshake(binary):
    # holds: nothing open at twice the handshake deadline + 3 s, silent or trickling.
    directory = tempfile.mkdtemp(prefix="netproxy-faults-")
    silent, trickling, trickler, server = [], [], None, None
    try:
        certificate, key = self_signed_certificate(directory)
        server, new_keys = start_server(binary, tls_config(certificate, key))
        address = server.address("echo", True)
        time.sleep(0.5)
        baseline = server.descriptors()
        silent, silent_failures = open_clients(address, 100, "127.0.0.1", lambda i: proxy_header_from(80, i))
        trickling, trickle_failures = open_clients(address, 20, "127.0.0.1", lambda i: proxy_header_from(81, i))
        started = time.monotonic()
        hello = client_hello()
        trickler = Trickler([(sock, hello) for sock in trickling], interval=2.0)
        sleep_until(started + 2 * DEADLINE + SLACK)
        silent_open, trickling_open = count_open(silent), count_open(trickling)
        descriptors = server.descriptors()
        metrics = metrics_of(server)
    finally:
        if trickler:
            trickler.stop()
        close_all(silent + trickling)
        if server:
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    result = {"new_keys": new_keys, "silent": len(silent), "silent_open_after": silent_open,
              "trickling": len(trickling), "trickling_open_after": trickling_open,
              "client_hello_bytes": len(hello), "connect_failures": silent_failures + trickle_failures,
              "checked_after_s": 2 * DEADLINE + SLACK, "server_descriptors": descriptors,
              "baseline_descriptors": baseline, "metrics": metrics}
    result["holds"] = silent_open == 0 and trickling_open == 0
    log("tls_slow_handshake (handshake deadline 2 s, checked at %.0f s): silent after header %d/%d open, "
        "ClientHello at 1 byte / 2 s %d/%d open; server fds %d (baseline %d)%s"
        % (result["checked_after_s"], silent_open, len(silent), trickling_open, len(trickling), descriptors, baseline,
           "" if new_keys else " [new keys refused]"))
    return result


# --- 10. http_idle -------------------------------------------------------------------------------

def probe_http_idle(binary):
    # holds: nothing open on either port at the idle deadline + 3 s (+ 2 s for the tricklers,
    # one more byte each).
    config = base_config(http_ports=[0], metrics_port=0, idle_timeout=DEADLINE, http_idle_timeout=DEADLINE,
                         metrics_idle_timeout=DEADLINE, max_connections_per_source=PER_SOURCE)
    server, new_keys = start_server(binary, config)
    groups, tricklers = {}, []
    try:
        time.sleep(0.5)
        baseline = server.descriptors()
        for port, (service, path, network) in {"http": ("http", "/", 90), "metrics": ("metrics", "/metrics", 92)}.items():
            address = server.address(service)
            request = ("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode()
            idle, failures = [], 0
            for index in range(50):
                try:
                    sock = connect(address, timeout=5, source=spread_source(network, index))
                except OSError:
                    failures += 1
                    continue
                try:
                    sock.sendall(request)
                    read_http_response(sock)
                    idle.append(sock)
                except OSError:
                    failures += 1
                    sock.close()
            slow, slow_failures = open_clients(address, 50, lambda i: spread_source(network + 1, i))
            groups[port] = {"idle": idle, "trickling": slow, "failures": failures + slow_failures}
            tricklers.append(Trickler([(sock, request) for sock in slow], interval=2.0))
        started = time.monotonic()
        held = server.descriptors()
        sleep_until(started + DEADLINE + SLACK + 2)
        counts = {port: {"idle_open": count_open(group["idle"]), "idle": len(group["idle"]),
                         "trickling_open": count_open(group["trickling"]), "trickling": len(group["trickling"]),
                         "failures": group["failures"]} for port, group in groups.items()}
        after = server.descriptors()
        metrics = metrics_of(server)
    finally:
        for trickler in tricklers:
            trickler.stop()
        for group in groups.values():
            close_all(group["idle"] + group["trickling"])
        server.stop()
    result = {"new_keys": new_keys, "ports": counts, "checked_after_s": DEADLINE + SLACK + 2,
              "server_descriptors": {"baseline": baseline, "with_clients": held, "after_deadline": after},
              "metrics": metrics}
    result["holds"] = all(c["idle_open"] == 0 and c["trickling_open"] == 0 for c in counts.values())
    log("http_idle (idle deadline 2 s, checked at %.0f s): %s; server fds %d -> %d -> %d%s"
        % (result["checked_after_s"], "; ".join(
            "%s: keep-alive idle %d/%d open, header at 1 byte / 2 s %d/%d open"
            % (port, c["idle_open"], c["idle"], c["trickling_open"], c["trickling"]) for port, c in counts.items()),
           baseline, held, after, "" if new_keys else " [new keys refused]"))
    return result


# --- 11. forward_target_silent -------------------------------------------------------------------

def forward_config(target, **entry):
    service = {"target": "%s:%d" % target, "connect_timeout": CONNECT_TIMEOUT, "idle_timeout": DEADLINE}
    service.update(entry)
    return base_config(fwd_ports=[0], echo_ports=[0], metrics_port=0, forward_services={"fwd": service},
                       idle_timeout=DEADLINE, fwd_idle_timeout=DEADLINE, max_connections_per_source=PER_SOURCE)


def states_of(server):
    return {state: count for state, count in server.socket_states().items() if state != "LISTEN"}


def probe_forward_target_silent(binary):
    # holds: at the idle deadline + 3 s the server is back to its baseline descriptors (+ 3) with
    # no CLOSE_WAIT or FIN_WAIT2 socket left.
    target = HoldingTarget()
    server, sockets = None, []
    try:
        server, new_keys = start_server(binary, forward_config(target.address,
                                                               max_pending_connects=MAX_PENDING_CONNECTS))
        time.sleep(0.5)
        baseline = server.descriptors()
        sockets, failures = open_clients(server.address("fwd"), 200, lambda i: spread_source(100, i), b"x")
        time.sleep(0.5)
        close_all(sockets)
        left = time.monotonic()
        sleep_until(left + 1)
        soon = {"descriptors": server.descriptors(), "states": states_of(server)}
        sleep_until(left + DEADLINE + SLACK)
        later = {"descriptors": server.descriptors(), "states": states_of(server)}
        metrics = metrics_of(server)
        reached_target = len(target.accepted)
    finally:
        if server:
            server.stop()
        target.close()
    result = {"new_keys": new_keys, "clients": len(sockets), "connect_failures": failures,
              "reached_target": reached_target, "baseline_descriptors": baseline, "after_1s": soon,
              "after_deadline": later, "checked_after_s": DEADLINE + SLACK, "metrics": metrics}
    result["holds"] = (later["descriptors"] <= baseline + 3 and not later["states"].get("CLOSE_WAIT")
                       and not later["states"].get("FIN_WAIT2"))
    log("forward_target_silent (200 clients send 1 byte and close; target holds): %d reached the target; "
        "1 s after: fds %d (baseline %d) %s; at %.0f s: fds %d %s%s"
        % (reached_target, soon["descriptors"], baseline, soon["states"], DEADLINE + SLACK, later["descriptors"],
           later["states"], "" if new_keys else " [new keys refused]"))
    return result


# --- 12. forward_connect_abandoned ---------------------------------------------------------------

def probe_forward_connect_abandoned(binary):
    # holds: 1 s after the clients left, at most 2 of the server's sockets are still in SYN_SENT
    # or CLOSE_WAIT (the connects of clients gone are abandoned, not left to connect_timeout).
    # No max_pending_connects here: what is measured is what happens to a connect once its
    # client has gone.
    target = BlackholeTarget()
    server, sockets = None, []
    try:
        server, new_keys = start_server(binary, forward_config(target.address))
        time.sleep(0.5)
        baseline = server.descriptors()
        sockets, failures = open_clients(server.address("fwd"), 200, lambda i: spread_source(110, i))
        time.sleep(0.5)
        during = {"descriptors": server.descriptors(), "states": states_of(server)}
        close_all(sockets)
        left = time.monotonic()
        sleep_until(left + 1)
        soon = {"descriptors": server.descriptors(), "states": states_of(server)}
        sleep_until(left + CONNECT_TIMEOUT + SLACK)
        later = {"descriptors": server.descriptors(), "states": states_of(server)}
        metrics = metrics_of(server)
    finally:
        if server:
            server.stop()
        target.close()
    result = {"new_keys": new_keys, "blackhole_verified": target.verified, "clients": len(sockets),
              "connect_failures": failures, "baseline_descriptors": baseline, "while_connecting": during,
              "after_1s": soon, "after_connect_timeout": later, "metrics": metrics,
              "syn_sent_1s": soon["states"].get("SYN_SENT", 0), "close_wait_1s": soon["states"].get("CLOSE_WAIT", 0)}
    result["holds"] = result["syn_sent_1s"] + result["close_wait_1s"] <= 2
    log("forward_connect_abandoned (blackholed target %s, 200 clients leave during the connect): while connecting "
        "fds %d %s; 1 s after they left: SYN_SENT %d, CLOSE_WAIT %d, fds %d (baseline %d); at %.0f s: fds %d %s%s"
        % ("verified" if target.verified else "NOT verified", during["descriptors"], during["states"],
           result["syn_sent_1s"], result["close_wait_1s"], soon["descriptors"], baseline, CONNECT_TIMEOUT + SLACK,
           later["descriptors"], later["states"], "" if new_keys else " [new keys refused]"))
    return result


# --- 13. forward_connect_flood -------------------------------------------------------------------

def probe_forward_connect_flood(binary):
    # holds: the server lives and echoes to a legitimate client during the flood (4 of 4, 1 s
    # timeout each) and after it; throughout the flood (sampled every 0.25 s) at most
    # max_pending_connects (50) + 5 connects are in SYN_SENT and the descriptors stay within
    # 2 x 50 + 20 of the baseline. Peaks, not the last sample: connects expire in waves at
    # connect_timeout, so one snapshot can fall in a trough.
    target = BlackholeTarget()
    server = None
    seconds, workers = 5.0, 4
    counters = {"attempts": 0, "connected": 0, "failed": 0}
    lock = threading.Lock()
    try:
        server, new_keys = start_server(binary, forward_config(target.address, max_pending_connects=MAX_PENDING_CONNECTS),
                                        ulimit_files=1024)
        address, echo_address = server.address("fwd"), server.address("echo")
        time.sleep(0.5)
        baseline = server.descriptors()
        started = time.monotonic()
        stop_at = started + seconds
        next_index = iter(range(10 ** 9))

        def flood():
            while time.monotonic() < stop_at:
                with lock:
                    index = next(next_index)
                    counters["attempts"] += 1
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.settimeout(1.0)
                try:
                    sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    sock.bind((spread_source(120, index), 0))
                    sock.connect(address)
                    with lock:
                        counters["connected"] += 1
                except OSError:
                    with lock:
                        counters["failed"] += 1
                close_all([sock], reset=True)

        echoes_during = []

        def legitimate():
            for moment in (1, 2, 3, 4):
                sleep_until(started + moment)
                echoes_during.append(echo_once(echo_address, timeout=1))

        threads = [threading.Thread(target=flood, daemon=True) for _ in range(workers)]
        threads.append(threading.Thread(target=legitimate, daemon=True))
        for thread in threads:
            thread.start()
        peak, peak_syn_sent = baseline, 0
        while time.monotonic() < stop_at:
            try:
                peak = max(peak, server.descriptors())
                peak_syn_sent = max(peak_syn_sent, server.socket_states().get("SYN_SENT", 0))
            except OSError:
                break
            time.sleep(0.25)
        for thread in threads:
            thread.join(10)
        alive = server.alive()
        end = {"descriptors": server.descriptors(), "states": states_of(server)} if alive else None
        metrics = metrics_of(server) if alive else None
        # All series of the family, zeros included: an absent one is a build without the metric.
        limited = None
        if alive:
            limited = scrape_metrics(server.address("metrics"), families=("netproxy_connections_limited_total",),
                                     nonzero=False)
        sleep_until(time.monotonic() + CONNECT_TIMEOUT + SLACK)
        alive = server.alive()
        later = {"descriptors": server.descriptors(), "states": states_of(server)} if alive else None
        echo_later = alive and echo_once(echo_address, timeout=2)
    finally:
        if server:
            server.stop()
        target.close()
    pending = [value for series, value in (limited or {}).items() if 'limit="pending_connects"' in series]
    pending_limited = sum(pending) if pending else None  # None: not exported
    syn_sent = end["states"].get("SYN_SENT", 0) if end else None
    result = {"new_keys": new_keys, "blackhole_verified": target.verified, "flood_seconds": seconds, **counters,
              "baseline_descriptors": baseline, "peak_descriptors": peak, "peak_syn_sent": peak_syn_sent,
              "at_end": end, "syn_sent_at_end": syn_sent, "limited_pending_connects": pending_limited,
              "echoes_during_flood": sum(echoes_during), "echo_attempts_during_flood": len(echoes_during),
              "after_connect_timeout": later, "echo_after_connect_timeout": bool(echo_later), "metrics": metrics}
    result["holds"] = bool(alive and echo_later and all(echoes_during) and len(echoes_during) == 4
                           and peak_syn_sent <= MAX_PENDING_CONNECTS + 5
                           and peak <= baseline + 2 * MAX_PENDING_CONNECTS + 20)
    log("forward_connect_flood (ulimit -n 1024, %.0f s of connect-and-reset at a blackholed forward%s): %d connects, "
        "%d failed; server fds %d -> peak %d -> end %s, SYN_SENT peak %d (end %s), limited{pending_connects} %s; "
        "legitimate echoes during the flood %d/%d, %.0f s later %s (fds %s)%s"
        % (seconds, "" if target.verified else " NOT verified", counters["attempts"], counters["failed"], baseline, peak,
           end["descriptors"] if end else "server gone", peak_syn_sent, syn_sent, pending_limited,
           sum(echoes_during), len(echoes_during), CONNECT_TIMEOUT + SLACK, "yes" if echo_later else "no",
           later["descriptors"] if later else "server gone", "" if new_keys else " [new keys refused]"))
    return result


# --- 14. forward_blast_then_close ----------------------------------------------------------------

def probe_forward_blast_then_close(binary):
    # holds: at the idle deadline + 3 s after the clients closed, the server is back to its
    # baseline descriptors (+ 3) with no CLOSE_WAIT. RSS is reported, not judged: an allocator
    # need not give freed memory back.
    target = HoldingTarget()
    server = None
    clients, blast = 40, MB
    sent = [0] * clients
    try:
        server, new_keys = start_server(binary, forward_config(target.address,
                                                               max_pending_connects=MAX_PENDING_CONNECTS))
        address = server.address("fwd")
        time.sleep(0.5)
        baseline, rss_before = server.descriptors(), server.rss_kib()
        block = random.Random(8).randbytes(blast)

        def blaster(index):
            try:
                with connect(address, timeout=5, source=spread_source(130, index)) as sock:
                    view = memoryview(block)
                    while sent[index] < blast:
                        sent[index] += sock.send(view[sent[index]:])
            except OSError:
                pass

        threads = [threading.Thread(target=blaster, args=(index,), daemon=True) for index in range(clients)]
        for thread in threads:
            thread.start()
        rss_peak = rss_before
        while any(thread.is_alive() for thread in threads):
            rss_peak = max(rss_peak, server.rss_kib())
            time.sleep(0.2)
        left = time.monotonic()
        soon = {"descriptors": server.descriptors(), "states": states_of(server), "rss_mb": round(server.rss_kib() / 1024, 1)}
        sleep_until(left + DEADLINE + SLACK)
        later = {"descriptors": server.descriptors(), "states": states_of(server), "rss_mb": round(server.rss_kib() / 1024, 1)}
        metrics = metrics_of(server)
    finally:
        if server:
            server.stop()
        target.close()
    result = {"new_keys": new_keys, "clients": clients, "fully_sent": sum(1 for n in sent if n == blast),
              "sent_mb": round(sum(sent) / MB, 1), "baseline_descriptors": baseline,
              "rss_before_mb": round(rss_before / 1024, 1), "rss_peak_mb": round(rss_peak / 1024, 1),
              "right_after_close": soon, "after_deadline": later, "checked_after_s": DEADLINE + SLACK, "metrics": metrics}
    result["holds"] = later["descriptors"] <= baseline + 3 and not later["states"].get("CLOSE_WAIT")
    log("forward_blast_then_close (40 clients send 1 MB to a target that never reads, then close): %d/%d sent it all; "
        "server fds %d -> %d -> %d at %.0f s %s; RSS %.1f -> peak %.1f -> %.1f MB%s"
        % (result["fully_sent"], clients, baseline, soon["descriptors"], later["descriptors"], DEADLINE + SLACK,
           later["states"], rss_before / 1024, rss_peak / 1024, later["rss_mb"], "" if new_keys else " [new keys refused]"))
    return result


# --- 15. multiplex_silent ------------------------------------------------------------------------

def probe_multiplex_silent(binary):
    # holds: no connection open at detect_timeout (1 s) + the idle deadline + 3 s.
    count = 300
    config = base_config(echo_ports=[], mux_ports=[0], metrics_port=0, idle_timeout=DEADLINE,
                         mux_idle_timeout=DEADLINE, max_connections_per_source=PER_SOURCE,
                         multiplex_services={"mux": {"default": "echo", "detect_timeout": 1, "idle_timeout": DEADLINE,
                                                     "max_pending_detections": 256}})
    server, new_keys = start_server(binary, config)
    sockets = []
    try:
        time.sleep(0.5)
        baseline = server.descriptors()
        sockets, failures = open_clients(server.address("mux"), count, lambda i: spread_source(140, i))
        started = time.monotonic()
        sleep_until(started + 0.5)
        open_early, held = count_open(sockets), server.descriptors()
        sleep_until(started + 1 + DEADLINE + SLACK)
        open_after, after = count_open(sockets), server.descriptors()
        metrics = metrics_of(server)
    finally:
        close_all(sockets)
        server.stop()
    result = {"new_keys": new_keys, "clients": len(sockets), "connect_failures": failures, "open_at_0_5s": open_early,
              "open_after_deadline": open_after, "checked_after_s": 1 + DEADLINE + SLACK,
              "server_descriptors": {"baseline": baseline, "with_clients": held, "after_deadline": after},
              "metrics": metrics, "holds": open_after == 0}
    log("multiplex_silent (%d silent clients, detect_timeout 1 s, idle 2 s): %d open at 0.5 s, %d open at %.0f s; "
        "server fds %d -> %d -> %d%s"
        % (count, open_early, open_after, result["checked_after_s"], baseline, held, after,
           "" if new_keys else " [new keys refused]"))
    return result


# --- 16. per_source_limit ------------------------------------------------------------------------

def probe_per_source_limit(binary):
    # holds: the server keeps at most max_connections_per_source (100) of the 300 connections of
    # 127.0.0.67, and another source is still served. idle_timeout is 30 s, out of the way.
    count = 300
    config = base_config(echo_ports=[0], metrics_port=0, idle_timeout=30, echo_idle_timeout=30,
                         max_connections_per_source=PER_SOURCE)
    server, new_keys = start_server(binary, config)
    sockets = []
    try:
        address = server.address("echo")
        time.sleep(0.5)
        baseline = server.descriptors()
        sockets, failures = open_clients(address, count, "127.0.0.67")
        time.sleep(2)
        client_open = count_open(sockets)
        kept = sum(count for state, count in server.socket_states("127.0.0.67").items() if state == "ESTABLISHED")
        descriptors = server.descriptors()
        other_served = echo_once(address, timeout=2)
        metrics = metrics_of(server)
    finally:
        close_all(sockets)
        server.stop()
    result = {"new_keys": new_keys, "connections": count, "connected": len(sockets), "connect_failures": failures,
              "kept_by_server": kept, "open_at_client": client_open, "server_descriptors": descriptors,
              "baseline_descriptors": baseline, "other_source_served": other_served, "metrics": metrics}
    result["holds"] = kept <= PER_SOURCE and other_served
    log("per_source_limit (%d connections from 127.0.0.67, limit 100): the server keeps %d open (%d open at the "
        "client side), fds %d (baseline %d); another source served: %s%s"
        % (count, kept, client_open, descriptors, baseline, "yes" if other_served else "no",
           "" if new_keys else " [new keys refused]"))
    return result


PROBES = {
    "fd_leak": probe_fd_leak,
    "halfclose_loss": probe_halfclose_loss,
    "unbounded_memory": probe_unbounded_memory,
    "accept_busy_loop": probe_accept_busy_loop,
    "sighup": probe_sighup,
    "lenient_config": probe_lenient_config,
    "silent_after_header": probe_silent_after_header,
    "one_source_flood": probe_one_source_flood,
    "tls_slow_handshake": probe_tls_slow_handshake,
    "http_idle": probe_http_idle,
    "forward_target_silent": probe_forward_target_silent,
    "forward_connect_abandoned": probe_forward_connect_abandoned,
    "forward_connect_flood": probe_forward_connect_flood,
    "forward_blast_then_close": probe_forward_blast_then_close,
    "multiplex_silent": probe_multiplex_silent,
    "per_source_limit": probe_per_source_limit,
}


def main():
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--netproxy", required=True, help="the netproxy binary to measure")
    parser.add_argument("--only", action="append", choices=sorted(PROBES), help="run only this probe (repeatable)")
    parser.add_argument("--json", action="store_true", help="write only the JSON summary to stdout (text to stderr)")
    ARGS = parser.parse_args()
    if not os.access(ARGS.netproxy, os.X_OK):
        parser.error("%s is not an executable" % ARGS.netproxy)
    raise_descriptor_limit()
    summary = {"netproxy": os.path.abspath(ARGS.netproxy), "probes": {}}
    for name in [name for name in PROBES if not ARGS.only or name in ARGS.only]:
        started = time.monotonic()
        try:
            result = PROBES[name](ARGS.netproxy)
        except Exception as error:  # one broken probe must not hide the others
            log("%s: probe error: %s: %s" % (name, type(error).__name__, error))
            result = {"probe_error": "%s: %s" % (type(error).__name__, error)}
        result["probe_seconds"] = round(time.monotonic() - started, 1)
        summary["probes"][name] = result
    if not ARGS.json:
        print("summary:")
    print(json.dumps(summary, indent=2 if ARGS.json else None, sort_keys=False))


if __name__ == "__main__":
    main()
