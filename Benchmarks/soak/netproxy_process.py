"""Shared helpers for faults.py and soak.py: run a netproxy host as a child process, read its
banner, look at its resources through /proc, and build PROXY headers.

Standard library only, Linux only (/proc).
"""

import ipaddress
import json
import os
import re
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# "  echo (PROXY)           127.0.0.1:40123" or "  metrics                [::1]:40124"
BANNER_LINE = re.compile(r"^  (\S+)(?: \((PROXY(?:\+TLS)?)\))?\s+(\S+)$")


class ServerError(Exception):
    pass


class NetProxyServer:
    """One `netproxy serve` child with its own temporary configuration file.

    Ports are 0 in the configurations; the bound ports are read from the banner, so two probes
    never race for a port. Stopped by PID only.
    """

    def __init__(self, binary, config, ulimit_files=None, raw_config=None, start_timeout=60.0):
        self.binary = os.path.abspath(binary)
        self.config = config
        self.directory = tempfile.mkdtemp(prefix="netproxy-soak-")
        self.config_path = os.path.join(self.directory, "config.json")
        with open(self.config_path, "w") as file:
            file.write(raw_config if raw_config is not None else json.dumps(config, indent=2))
        # stderr goes to a file: a chatty server can never block on a full pipe, and the tail
        # is still there after the process died.
        self.stderr_path = os.path.join(self.directory, "stderr.log")
        self._stderr = open(self.stderr_path, "wb")
        command = [self.binary, "serve", "--config", self.config_path]
        if ulimit_files is not None:
            # exec keeps the PID, so the PID below is the server's own.
            shell = "ulimit -n %d && exec \"$0\" \"$@\"" % ulimit_files
            command = ["bash", "-c", shell] + command
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=self._stderr)
        self.pid = self.process.pid
        self.stdout_lines = []
        self._stdout_changed = threading.Condition()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self.listeners = {}
        self.start_timeout = start_timeout

    def _read_stdout(self):
        for raw in self.process.stdout:
            with self._stdout_changed:
                self.stdout_lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._stdout_changed.notify_all()
        with self._stdout_changed:
            self._stdout_changed.notify_all()

    def wait_for_banner(self, timeout=None):
        """Waits for the banner and returns {(service, is_proxy): [(host, port), ...]}."""
        deadline = time.monotonic() + (timeout or self.start_timeout)
        with self._stdout_changed:
            while "netproxy is listening:" not in self.stdout_lines:
                if self.process.poll() is not None:
                    raise ServerError("netproxy exited with %s before listening: %s"
                                      % (self.process.returncode, self.stderr_tail(3)))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServerError("no banner after %.0f s" % (timeout or self.start_timeout))
                self._stdout_changed.wait(min(left, 0.2))
            # The banner is one write; give the reader thread a moment to split all of it.
            quiet_since = time.monotonic()
            count = len(self.stdout_lines)
            while time.monotonic() - quiet_since < 0.3:
                self._stdout_changed.wait(0.1)
                if len(self.stdout_lines) != count:
                    count = len(self.stdout_lines)
                    quiet_since = time.monotonic()
            lines = list(self.stdout_lines)
        start = lines.index("netproxy is listening:") + 1
        for line in lines[start:]:
            if line == "Try:":
                break
            match = BANNER_LINE.match(line)
            if not match:
                continue
            service, proxy, address = match.groups()
            host, _, port = address.rpartition(":")
            self.listeners.setdefault((service, proxy is not None), []).append((host.strip("[]"), int(port)))
        return self.listeners

    def address(self, service, proxy=False):
        """The first IPv4 address of a listener."""
        candidates = self.listeners.get((service, proxy), [])
        for host, port in candidates:
            if ":" not in host:
                return host, port
        if candidates:
            return candidates[0]
        raise ServerError("no %s%s listener in the banner" % (service, " PROXY" if proxy else ""))

    # --- /proc --------------------------------------------------------------------------------

    def alive(self):
        return self.process.poll() is None

    def descriptors(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def rss_kib(self):
        with open("/proc/%d/status" % self.pid) as file:
            for line in file:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def cpu_seconds(self):
        with open("/proc/%d/stat" % self.pid) as file:
            text = file.read()
        # The command name may contain spaces; the fields after it are fixed.
        fields = text[text.rindex(")") + 2:].split()
        utime, stime = int(fields[11]), int(fields[12])
        return (utime + stime) / CLOCK_TICKS

    def socket_states(self):
        """{state name: count} for the process's TCP sockets (from /proc/PID/net/tcp{,6})."""
        inodes = set()
        directory = "/proc/%d/fd" % self.pid
        for name in os.listdir(directory):
            try:
                target = os.readlink(os.path.join(directory, name))
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        names = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
                 "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
                 "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}
        counts = {}
        for table in ("tcp", "tcp6"):
            try:
                with open("/proc/%d/net/%s" % (self.pid, table)) as file:
                    next(file)
                    for line in file:
                        fields = line.split()
                        if len(fields) > 9 and fields[9] in inodes:
                            state = names.get(fields[3], fields[3])
                            counts[state] = counts.get(state, 0) + 1
            except OSError:
                pass
        return counts

    def stderr_text(self):
        if not self._stderr.closed:
            self._stderr.flush()
        with open(self.stderr_path, "rb") as file:
            return file.read().decode("utf-8", "replace")

    def stderr_tail(self, lines=5):
        return "\n".join(self.stderr_text().splitlines()[-lines:])

    # --- stopping ------------------------------------------------------------------------------

    def signal(self, number):
        if self.alive():
            os.kill(self.pid, number)

    def stop(self, timeout=15.0):
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(10)
        self._stderr.close()
        return self.process.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# --- PROXY headers ----------------------------------------------------------------------------

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1_header(source_ip, source_port, destination_ip="198.51.100.7", destination_port=443):
    family = "TCP6" if ":" in source_ip else "TCP4"
    if family == "TCP6" and ":" not in destination_ip:
        destination_ip = "2001:db8::7"
    return ("PROXY %s %s %s %d %d\r\n" % (family, source_ip, destination_ip, source_port,
                                         destination_port)).encode()


def v2_header(source_ip, source_port, destination_ip="198.51.100.7", destination_port=443, tlvs=b""):
    source = ipaddress.ip_address(source_ip)
    if source.version == 6:
        destination = ipaddress.ip_address(destination_ip if ":" in destination_ip else "2001:db8::7")
        family = 0x21  # AF_INET6, STREAM
    else:
        destination = ipaddress.ip_address(destination_ip)
        family = 0x11  # AF_INET, STREAM
    addresses = source.packed + destination.packed + struct.pack("!HH", source_port, destination_port)
    body = addresses + tlvs
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body


def default_proxy_header():
    return v1_header("192.0.2.1", 51234)


# --- small client helpers -------------------------------------------------------------------

def connect(address, timeout=10.0, source=None):
    sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        if source:
            sock.bind((source, 0))
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def read_http_response(sock, buffered=b""):
    """Reads one response (headers, then Content-Length bytes); returns (status, headers, body,
    leftover bytes)."""
    data = buffered
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("EOF inside the response head (%d bytes)" % len(data))
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("EOF inside the response body")
        rest += chunk
    return status, headers, rest[:length], rest[length:]


def read_to_eof(sock, limit=1 << 20):
    data = b""
    while len(data) <= limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data
