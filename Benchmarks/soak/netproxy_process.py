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


TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
              "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN",
              "0B": "CLOSING"}


def proc_address(text):
    """`0100007F:1F90` (or the 32-digit IPv6 form) from /proc/net/tcp{,6} as ("127.0.0.1", 8080).
    The address is in host byte order, 32 bits at a time."""
    hex_address, _, hex_port = text.partition(":")
    raw = b"".join(struct.pack("<I", int(hex_address[i:i + 8], 16)) for i in range(0, len(hex_address), 8))
    address = ipaddress.ip_address(raw)
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address), int(hex_port, 16)


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

    def tcp_sockets(self):
        """[(state name, (local ip, port), (remote ip, port))] for the process's own TCP sockets
        (from /proc/PID/net/tcp{,6}, matched by the inodes in /proc/PID/fd)."""
        inodes = set()
        directory = "/proc/%d/fd" % self.pid
        for name in os.listdir(directory):
            try:
                target = os.readlink(os.path.join(directory, name))
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        sockets = []
        for table in ("tcp", "tcp6"):
            try:
                with open("/proc/%d/net/%s" % (self.pid, table)) as file:
                    next(file)
                    for line in file:
                        fields = line.split()
                        if len(fields) > 9 and fields[9] in inodes:
                            sockets.append((TCP_STATES.get(fields[3], fields[3]), proc_address(fields[1]),
                                            proc_address(fields[2])))
            except OSError:
                pass
        return sockets

    def socket_states(self, remote_ip=None):
        """{state name: count} for the process's TCP sockets; with `remote_ip`, only those whose
        peer is that address."""
        counts = {}
        for state, _, remote in self.tcp_sockets():
            if remote_ip is None or remote[0] == remote_ip:
                counts[state] = counts.get(state, 0) + 1
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


# --- deadlines and budgets --------------------------------------------------------------------

# Keys of the idle and handshake deadlines and of the connection budgets. A build that predates
# them refuses each one as an unknown key; without_limit_keys() gives the same configuration
# without them, for such a build.
LIMIT_KEYS = ("idle_timeout", "tls_handshake_timeout", "max_connections", "max_connections_per_source")
FORWARD_LIMIT_KEYS = ("idle_timeout", "max_pending_connects")
MULTIPLEX_LIMIT_KEYS = ("idle_timeout", "max_pending_detections")


def without_limit_keys(config):
    """A copy of `config` without the deadline and budget keys, at the top level (including
    `<service>_idle_timeout`), in `proxy_port_options` entries and in forward and multiplex
    services."""
    copy = json.loads(json.dumps(config))
    for key in list(copy):
        if key in LIMIT_KEYS or key.endswith("_idle_timeout"):
            del copy[key]
    for section, keys in (("proxy_port_options", LIMIT_KEYS), ("forward_services", FORWARD_LIMIT_KEYS),
                          ("multiplex_services", MULTIPLEX_LIMIT_KEYS)):
        for entry in copy.get(section, {}).values():
            for key in keys:
                entry.pop(key, None)
    return copy


def start_server(binary, config, ulimit_files=None):
    """Starts a server on `config` and waits for its banner; returns (server, new_keys).

    A binary that refuses a key as unknown (a build before the deadlines and budgets) is started
    once more on without_limit_keys(config), and new_keys is then False."""
    server = NetProxyServer(binary, config, ulimit_files=ulimit_files)
    try:
        server.wait_for_banner()
        return server, True
    except ServerError:
        server.stop()
        if "unknown key" not in server.stderr_text():
            raise
    server = NetProxyServer(binary, without_limit_keys(config), ulimit_files=ulimit_files)
    try:
        server.wait_for_banner()
    except BaseException:
        server.stop()
        raise
    return server, False


METRIC_FAMILIES = ("netproxy_timeouts_total", "netproxy_connections_limited_total", "netproxy_connections",
                   "netproxy_forward_failures_total", "netproxy_connections_rejected_total")


def scrape_metrics(address, families=METRIC_FAMILIES, nonzero=True, source=None):
    """{series: value} of the named families from GET /metrics (only the non-zero series unless
    `nonzero` is False); None when the scrape fails."""
    try:
        with connect(address, timeout=5, source=source) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            status, _, body, _ = read_http_response(sock)
    except (OSError, ValueError):
        return None
    if status != 200:
        return None
    series = {}
    for line in body.decode("utf-8", "replace").splitlines():
        if not line or line.startswith("#"):
            continue
        name_and_labels, _, value = line.rpartition(" ")
        if name_and_labels.split("{")[0] not in families:
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        if number or not nonzero:
            series[name_and_labels] = int(number) if number.is_integer() else number
    return series

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
