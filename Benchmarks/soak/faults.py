#!/usr/bin/env python3
"""Measures six known faults of a `netproxy` binary, one probe at a time.

    python3 Benchmarks/soak/faults.py --netproxy .build/release/netproxy [--only NAME] [--json]

Every probe starts its own server (own temporary configuration, ports chosen by the server and
read from its banner), stops it by PID, and stays under a minute. Each prints one line of text;
the summary follows as JSON (with --json, only the JSON is written to stdout).

Probes: fd_leak, halfclose_loss, unbounded_memory, accept_busy_loop, sighup, lenient_config.
Linux only (/proc). Standard library only.
"""

import argparse
import errno
import hashlib
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netproxy_process import (NetProxyServer, ServerError, connect, default_proxy_header,  # noqa: E402
                              read_http_response, read_to_eof)

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


PROBES = {
    "fd_leak": probe_fd_leak,
    "halfclose_loss": probe_halfclose_loss,
    "unbounded_memory": probe_unbounded_memory,
    "accept_busy_loop": probe_accept_busy_loop,
    "sighup": probe_sighup,
    "lenient_config": probe_lenient_config,
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
