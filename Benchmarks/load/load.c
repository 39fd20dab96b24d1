/*
 * load: a connection-rate and echo-throughput load generator for netproxy and nginx.
 *
 *   cc -O2 -Wall -Wextra -pthread -o load load.c
 *
 * Connection mode (the default): -n connections, -c at a time. Each one connects, sends the
 * PROXY header chosen with -x (if any), reads the reply to EOF and closes. The latency of a
 * connection runs from the start of connect() to the end of the reply. With -x v1 or v2 the
 * reply must name the header's source address and port (netproxy's whoami JSON and an nginx
 * `return "$proxy_protocol_addr $proxy_protocol_port\n"` both do); with -x none it must not be
 * empty. Prints one line:
 *
 *   conns=20000 errors=0 seconds=0.812 conn_per_s=24630 p50_us=2100 p90_us=... p99_us=5400
 *   max_us=... reply_bytes_min=... reply_bytes_max=...
 *
 * Stream mode (-s BYTES): -c connections, each sends the header then BYTES of a pseudo-random
 * stream to an echo service while reading the echo back, checks every byte that comes back,
 * half-closes once all is sent and reads to EOF. Prints one line:
 *
 *   streams=16 bytes=1073741824 seconds=1.234 mb_per_s=870.1 errors=0
 *
 * where bytes counts one direction (the bytes sent, which all came back) and MB is 10^6 bytes.
 *
 * Loopback targets (127.0.0.0/8): connections are spread over the source addresses 127.0.0.2 to
 * 127.0.0.254 (IP_BIND_ADDRESS_NO_PORT, so the port is still chosen at connect()). The server
 * closes first, so its TIME_WAIT entries carry the 4-tuples; with one source address, runs of
 * tens of thousands of connections soon reuse a tuple still in TIME_WAIT on the server, whose
 * SYN then waits for a retransmission (a one-second latency outlier) or fails.
 *
 * The exit status is 0 when there was no error, 1 when some connection failed, 2 on bad usage.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum header_kind { HEADER_NONE, HEADER_V1, HEADER_V2 };

/* ---- options -------------------------------------------------------------------------------- */

static const char *opt_host = "127.0.0.1";
static int opt_port = 0;
static long opt_concurrency = 64;
static long opt_total = 20000;
static enum header_kind opt_header = HEADER_NONE;
static long long opt_stream_bytes = -1; /* -1: connection mode */
static int opt_threads = 2; /* the generator's work is mostly the kernel's TCP work: 2 cores */
static int opt_spread = 1;    /* spread loopback clients over 127.0.0.2-254 */
static int opt_verify = 1;    /* check the reply names the header's source */
static double opt_idle = 10.; /* seconds without any event before in-flight connections fail */

static struct sockaddr_in target;

/* ---- shared state --------------------------------------------------------------------------- */

static atomic_long next_index;     /* next connection to start */
static atomic_long error_count;
static atomic_long errors_reported; /* the first few errors are described on stderr */
static uint32_t *latencies_us;      /* per connection, connection mode */
static atomic_long reply_min = LONG_MAX;
static atomic_long reply_max;
static atomic_llong stream_bytes_done;

/* The stream's bytes: a fixed pseudo-random block whose length is not a power of two, so a lost
 * or repeated chunk of any usual size shows as a mismatch. Byte i of stream k is
 * pattern[(offset_k + i) % PATTERN_PERIOD]; the block is followed by a copy of its first
 * PATTERN_SLACK bytes so any chunk up to that size is contiguous. */
#define PATTERN_PERIOD 1000003u
#define PATTERN_SLACK (256u * 1024u)
#define IO_CHUNK (256u * 1024u)
static unsigned char *pattern;

static void error_report(long index, const char *what, int err)
{
    atomic_fetch_add(&error_count, 1);
    if (atomic_fetch_add(&errors_reported, 1) < 10) {
        if (err)
            fprintf(stderr, "load: connection %ld: %s: %s\n", index, what, strerror(err));
        else
            fprintf(stderr, "load: connection %ld: %s\n", index, what);
    }
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- headers -------------------------------------------------------------------------------- */

/* Connection i claims 192.0.2.(i % 254 + 1), source port 1024 + (i * 7 % 64000), to
 * 198.51.100.7:443. */
static unsigned source_octet(long index) { return (unsigned)(index % 254) + 1u; }
static unsigned source_port(long index) { return 1024u + (unsigned)((index * 7) % 64000); }

static size_t make_header(long index, unsigned char *out)
{
    unsigned octet = source_octet(index), port = source_port(index);
    if (opt_header == HEADER_V1) {
        int length = sprintf((char *)out, "PROXY TCP4 192.0.2.%u 198.51.100.7 %u 443\r\n", octet, port);
        return (size_t)length;
    }
    if (opt_header == HEADER_V2) {
        static const unsigned char signature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                    0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
        memcpy(out, signature, 12);
        out[12] = 0x21; /* version 2, PROXY */
        out[13] = 0x11; /* AF_INET, STREAM */
        out[14] = 0;
        out[15] = 12;   /* address block length */
        out[16] = 192; out[17] = 0; out[18] = 2; out[19] = (unsigned char)octet;
        out[20] = 198; out[21] = 51; out[22] = 100; out[23] = 7;
        out[24] = (unsigned char)(port >> 8); out[25] = (unsigned char)port;
        out[26] = 443 >> 8; out[27] = 443 & 0xFF;
        return 28;
    }
    return 0;
}

/* Whether `text` occurs in buf with no digit right before or after it. */
static int contains_token(const char *buf, size_t length, const char *text)
{
    size_t n = strlen(text);
    const char *end = buf + length, *p = buf;
    while (p < end) {
        const char *hit = memmem(p, (size_t)(end - p), text, n);
        if (!hit)
            return 0;
        int digit_before = hit > buf && hit[-1] >= '0' && hit[-1] <= '9';
        int digit_after = hit + n < end && hit[n] >= '0' && hit[n] <= '9';
        if (!digit_before && !digit_after)
            return 1;
        p = hit + 1;
    }
    return 0;
}

/* ---- connections ---------------------------------------------------------------------------- */

#define REPLY_KEEP 1024 /* reply bytes kept for the check; the rest are only counted */

struct conn {
    int fd;
    long index;
    uint64_t started_us;
    /* connection mode */
    unsigned char header[64];
    size_t header_length, header_sent;
    size_t reply_length;
    char reply[REPLY_KEEP];
    /* stream mode */
    unsigned long long to_send, sent, received;
    unsigned offset;
    int write_closed;
};

struct worker {
    pthread_t thread;
    int id;
    long slots;         /* connections this worker keeps in flight */
    long total_streams; /* stream mode: streams this worker runs */
    long first_stream;
};

static int source_addresses_apply(int fd, long index)
{
    if (!opt_spread)
        return 0;
    int one = 1;
    if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one) < 0)
        return -1;
    struct sockaddr_in local = {.sin_family = AF_INET};
    local.sin_addr.s_addr = htonl(0x7F000000u | (uint32_t)(index % 253 + 2));
    return bind(fd, (struct sockaddr *)&local, sizeof local);
}

/* Starts connection `index` in `c`; returns 0, or -1 after counting the error. */
static int conn_start(int epoll_fd, struct conn *c, long index)
{
    c->index = index;
    c->started_us = now_us();
    c->header_length = make_header(index, c->header);
    c->header_sent = 0;
    c->reply_length = 0;
    c->sent = c->received = 0;
    c->write_closed = 0;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        error_report(index, "socket", errno);
        return -1;
    }
    if (opt_stream_bytes >= 0) {
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (source_addresses_apply(c->fd, index) < 0) {
        error_report(index, "bind", errno);
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    if (connect(c->fd, (struct sockaddr *)&target, sizeof target) < 0 && errno != EINPROGRESS) {
        error_report(index, "connect", errno);
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    struct epoll_event event = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (c->header_length > 0 || opt_stream_bytes > 0)
        event.events |= EPOLLOUT;
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, c->fd, &event) < 0) {
        error_report(index, "epoll_ctl", errno);
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    return 0;
}

static void conn_fail(struct conn *c, const char *what, int err)
{
    if (!err && c->fd >= 0) {
        socklen_t length = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &length);
    }
    error_report(c->index, what, err);
    close(c->fd);
    c->fd = -1;
}

/* Sends what is left of the header; returns 0, 1 when it would block, -1 on failure. */
static int conn_send_header(struct conn *c)
{
    while (c->header_sent < c->header_length) {
        ssize_t n = send(c->fd, c->header + c->header_sent, c->header_length - c->header_sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 1;
            if (errno == EINTR)
                continue;
            conn_fail(c, "send header", errno);
            return -1;
        }
        c->header_sent += (size_t)n;
    }
    return 0;
}

static void atomic_min(atomic_long *value, long candidate)
{
    long current = atomic_load(value);
    while (candidate < current && !atomic_compare_exchange_weak(value, &current, candidate)) {
    }
}

static void atomic_max(atomic_long *value, long candidate)
{
    long current = atomic_load(value);
    while (candidate > current && !atomic_compare_exchange_weak(value, &current, candidate)) {
    }
}

/* Connects and sends the header, on the events of a connection whose header is not all sent:
 * -1 when the connection is over, 1 while the header is not all sent, 0 once it is. */
static int conn_header_step(struct conn *c, uint32_t events)
{
    if (c->header_sent >= c->header_length)
        return 0;
    if (events & (EPOLLERR | EPOLLHUP)) {
        conn_fail(c, "connect", 0);
        return -1;
    }
    if (!(events & EPOLLOUT))
        return 1;
    return conn_send_header(c);
}

/* Connection mode: handles an event; returns 1 when the connection is over (closed). */
static int conn_event(struct conn *c, uint32_t events, char *buffer, size_t buffer_size)
{
    int header = conn_header_step(c, events);
    if (header != 0)
        return header < 0;
    for (;;) {
        ssize_t n = recv(c->fd, buffer, buffer_size, 0);
        if (n > 0) {
            if (c->reply_length < REPLY_KEEP) {
                size_t keep = (size_t)n < REPLY_KEEP - c->reply_length ? (size_t)n : REPLY_KEEP - c->reply_length;
                memcpy(c->reply + c->reply_length, buffer, keep);
            }
            c->reply_length += (size_t)n;
            continue;
        }
        if (n == 0)
            break;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (events & (EPOLLERR | EPOLLHUP)) {
                conn_fail(c, "connect", 0);
                return 1;
            }
            return 0;
        }
        conn_fail(c, "recv", errno);
        return 1;
    }
    /* EOF */
    uint64_t elapsed = now_us() - c->started_us;
    if (c->reply_length == 0) {
        conn_fail(c, "empty reply", 0);
        return 1;
    }
    if (opt_verify && opt_header != HEADER_NONE) {
        char address[32], port[16];
        size_t kept = c->reply_length < REPLY_KEEP ? c->reply_length : REPLY_KEEP;
        snprintf(address, sizeof address, "192.0.2.%u", source_octet(c->index));
        snprintf(port, sizeof port, "%u", source_port(c->index));
        if (!contains_token(c->reply, kept, address) || !contains_token(c->reply, kept, port)) {
            fprintf(stderr, "load: reply to connection %ld lacks %s port %s: %.*s\n", c->index, address, port,
                    (int)(kept < 300 ? kept : 300), c->reply);
            conn_fail(c, "wrong reply", 0);
            return 1;
        }
    }
    /* 0 marks a connection that failed. */
    latencies_us[c->index] = elapsed == 0 ? 1 : elapsed > UINT32_MAX ? UINT32_MAX : (uint32_t)elapsed;
    atomic_min(&reply_min, (long)c->reply_length);
    atomic_max(&reply_max, (long)c->reply_length);
    close(c->fd);
    c->fd = -1;
    return 1;
}

/* Stream mode: handles an event; returns 1 when the stream is over (closed). */
static int stream_event(struct conn *c, uint32_t events, unsigned char *buffer)
{
    int header = conn_header_step(c, events);
    if (header != 0)
        return header < 0;
    /* Send until the socket is full; reading below makes room again. */
    while (c->sent < c->to_send) {
        unsigned long long left = c->to_send - c->sent;
        size_t chunk = left < IO_CHUNK ? (size_t)left : IO_CHUNK;
        unsigned position = (unsigned)((c->offset + c->sent) % PATTERN_PERIOD);
        ssize_t n = send(c->fd, pattern + position, chunk, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            conn_fail(c, "send", errno);
            return 1;
        }
        c->sent += (unsigned long long)n;
    }
    if (c->sent == c->to_send && !c->write_closed) {
        if (shutdown(c->fd, SHUT_WR) < 0) {
            conn_fail(c, "shutdown", errno);
            return 1;
        }
        c->write_closed = 1;
    }
    for (;;) {
        ssize_t n = recv(c->fd, buffer, IO_CHUNK, 0);
        if (n > 0) {
            if (c->received + (unsigned long long)n > c->sent) {
                conn_fail(c, "more bytes back than sent", 0);
                return 1;
            }
            unsigned position = (unsigned)((c->offset + c->received) % PATTERN_PERIOD);
            if (memcmp(buffer, pattern + position, (size_t)n) != 0) {
                size_t at = 0;
                while (buffer[at] == pattern[position + at])
                    at++;
                char what[96];
                snprintf(what, sizeof what, "echo differs at byte %llu", c->received + at);
                conn_fail(c, what, 0);
                return 1;
            }
            c->received += (unsigned long long)n;
            continue;
        }
        if (n == 0)
            break;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (events & EPOLLERR) {
                conn_fail(c, "stream", 0);
                return 1;
            }
            return 0;
        }
        conn_fail(c, "recv", errno);
        return 1;
    }
    /* EOF */
    if (c->received != c->to_send) {
        char what[96];
        snprintf(what, sizeof what, "end of stream after %llu of %llu bytes", c->received, c->to_send);
        conn_fail(c, what, 0);
        return 1;
    }
    atomic_fetch_add(&stream_bytes_done, (long long)c->received);
    close(c->fd);
    c->fd = -1;
    return 1;
}

/* ---- workers -------------------------------------------------------------------------------- */

/* The next connection a worker starts, or -1 when there is none. Connection mode shares one
 * counter among the workers; stream mode gives each worker its own range. */
static long next_connection(long *stream_next, long stream_end)
{
    if (opt_stream_bytes >= 0)
        return *stream_next < stream_end ? (*stream_next)++ : -1;
    long index = atomic_fetch_add(&next_index, 1);
    return index < opt_total ? index : -1;
}

static void *worker_run(void *argument)
{
    struct worker *w = argument;
    int stream = opt_stream_bytes >= 0;
    size_t buffer_size = stream ? IO_CHUNK : 64 * 1024;
    unsigned char *buffer = malloc(buffer_size);
    struct conn *conns = calloc((size_t)w->slots, sizeof *conns);
    struct epoll_event *events = calloc((size_t)w->slots, sizeof *events);
    int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (!buffer || !conns || !events || epoll_fd < 0) {
        perror("load: worker");
        exit(1);
    }
    long active = 0, stream_next = w->first_stream, stream_end = w->first_stream + w->total_streams;

    for (long s = 0; s < w->slots; s++) {
        conns[s].fd = -1;
        long index = next_connection(&stream_next, stream_end);
        while (index >= 0) {
            if (stream) {
                conns[s].to_send = (unsigned long long)opt_stream_bytes;
                conns[s].offset = (unsigned)(((unsigned long long)index * 104729u) % PATTERN_PERIOD);
            }
            if (conn_start(epoll_fd, &conns[s], index) == 0) {
                active++;
                break;
            }
            index = next_connection(&stream_next, stream_end);
        }
        if (index < 0)
            break;
    }
    double idle_since = now_seconds();
    while (active > 0) {
        int ready = epoll_wait(epoll_fd, events, (int)w->slots, 200);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            perror("load: epoll_wait");
            exit(1);
        }
        if (ready == 0) {
            if (now_seconds() - idle_since > opt_idle) {
                for (long s = 0; s < w->slots; s++)
                    if (conns[s].fd >= 0) {
                        conn_fail(&conns[s], "no progress (timeout)", ETIMEDOUT);
                        active--;
                    }
            }
            continue;
        }
        idle_since = now_seconds();
        for (int e = 0; e < ready; e++) {
            struct conn *c = events[e].data.ptr;
            int over = stream ? stream_event(c, events[e].events, buffer)
                              : conn_event(c, events[e].events, (char *)buffer, buffer_size);
            if (!over)
                continue;
            active--;
            /* Reuse the slot for the next connection at once. */
            long index;
            while ((index = next_connection(&stream_next, stream_end)) >= 0) {
                if (stream) {
                    c->to_send = (unsigned long long)opt_stream_bytes;
                    c->offset = (unsigned)(((unsigned long long)index * 104729u) % PATTERN_PERIOD);
                }
                if (conn_start(epoll_fd, c, index) == 0) {
                    active++;
                    break;
                }
            }
        }
    }
    close(epoll_fd);
    free(events);
    free(conns);
    free(buffer);
    return NULL;
}

/* ---- main ----------------------------------------------------------------------------------- */

static int compare_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: load -p PORT [-H HOST] [-c CONCURRENCY] [-n CONNECTIONS] [-x none|v1|v2]\n"
            "            [-s BYTES] [-t THREADS] [-i IDLE_SECONDS] [-L] [-N]\n"
            "  -H HOST    IPv4 address to connect to (default 127.0.0.1)\n"
            "  -p PORT    port (required)\n"
            "  -c N       connections in flight (default 64); in stream mode, the number of streams\n"
            "  -n N       connections in all (default 20000); ignored in stream mode\n"
            "  -x KIND    PROXY header sent first: none (default), v1 or v2 (TCP4, INET/STREAM),\n"
            "             claiming 192.0.2.(i%%254+1):(1024+7i%%64000) -> 198.51.100.7:443\n"
            "  -s BYTES   stream mode: each connection sends BYTES (suffixes k, m, g: powers of 1024)\n"
            "             to an echo service and checks what comes back\n"
            "  -t N       threads, each with its own epoll (default 2)\n"
            "  -i SECONDS fail the connections in flight after this long without any event (default 10)\n"
            "  -L         do not spread loopback clients over 127.0.0.2-254\n"
            "  -N         do not check that the reply names the header's source\n");
}

static long long parse_size(const char *text)
{
    char *end;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (errno || end == text || value < 0)
        return -1;
    switch (*end) {
    case 'k': case 'K': value *= 1024; end++; break;
    case 'm': case 'M': value *= 1024 * 1024; end++; break;
    case 'g': case 'G': value *= 1024LL * 1024 * 1024; end++; break;
    default: break;
    }
    return *end ? -1 : value;
}

int main(int argc, char **argv)
{
    int option;
    while ((option = getopt(argc, argv, "H:p:c:n:x:s:t:i:LNh")) != -1) {
        switch (option) {
        case 'H': opt_host = optarg; break;
        case 'p': opt_port = atoi(optarg); break;
        case 'c': opt_concurrency = atol(optarg); break;
        case 'n': opt_total = atol(optarg); break;
        case 'x':
            if (!strcmp(optarg, "none")) opt_header = HEADER_NONE;
            else if (!strcmp(optarg, "v1")) opt_header = HEADER_V1;
            else if (!strcmp(optarg, "v2")) opt_header = HEADER_V2;
            else { usage(stderr); return 2; }
            break;
        case 's':
            opt_stream_bytes = parse_size(optarg);
            if (opt_stream_bytes < 0) { usage(stderr); return 2; }
            break;
        case 't': opt_threads = atoi(optarg); break;
        case 'i': opt_idle = atof(optarg); break;
        case 'L': opt_spread = 0; break;
        case 'N': opt_verify = 0; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (opt_port <= 0 || opt_port > 65535 || opt_concurrency <= 0 || opt_total <= 0 || opt_threads <= 0 ||
        opt_idle <= 0 || optind != argc) {
        usage(stderr);
        return 2;
    }
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)opt_port);
    if (inet_pton(AF_INET, opt_host, &target.sin_addr) != 1) {
        fprintf(stderr, "load: -H wants an IPv4 address, not %s\n", opt_host);
        return 2;
    }
    if ((ntohl(target.sin_addr.s_addr) >> 24) != 127)
        opt_spread = 0;

    /* A descriptor per connection in flight, and some. */
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
    }

    int stream = opt_stream_bytes >= 0;
    if (stream) {
        opt_total = opt_concurrency;
        pattern = malloc(PATTERN_PERIOD + PATTERN_SLACK);
        if (!pattern) {
            perror("load");
            return 1;
        }
        uint64_t state = 0x9E3779B97F4A7C15u;
        for (unsigned i = 0; i < PATTERN_PERIOD; i += 8) {
            /* splitmix64 */
            uint64_t z = (state += 0x9E3779B97F4A7C15u);
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
            z ^= z >> 31;
            for (unsigned b = 0; b < 8 && i + b < PATTERN_PERIOD; b++)
                pattern[i + b] = (unsigned char)(z >> (8 * b));
        }
        memcpy(pattern + PATTERN_PERIOD, pattern, PATTERN_SLACK);
    } else {
        latencies_us = calloc((size_t)opt_total, sizeof *latencies_us);
        if (!latencies_us) {
            perror("load");
            return 1;
        }
    }

    if (opt_threads > opt_concurrency)
        opt_threads = (int)opt_concurrency;
    struct worker *workers = calloc((size_t)opt_threads, sizeof *workers);
    long first = 0;
    for (int t = 0; t < opt_threads; t++) {
        workers[t].id = t;
        workers[t].slots = opt_concurrency / opt_threads + (t < opt_concurrency % opt_threads);
        workers[t].first_stream = first;
        workers[t].total_streams = workers[t].slots;
        first += workers[t].slots;
    }

    double started = now_seconds();
    if (opt_threads == 1) {
        worker_run(&workers[0]);
    } else {
        for (int t = 0; t < opt_threads; t++)
            if (pthread_create(&workers[t].thread, NULL, worker_run, &workers[t]) != 0) {
                perror("load: pthread_create");
                return 1;
            }
        for (int t = 0; t < opt_threads; t++)
            pthread_join(workers[t].thread, NULL);
    }
    double seconds = now_seconds() - started;
    long errors = atomic_load(&error_count);

    if (stream) {
        long long bytes = atomic_load(&stream_bytes_done);
        printf("streams=%ld bytes=%lld seconds=%.3f mb_per_s=%.1f errors=%ld\n", opt_concurrency, bytes, seconds,
               (double)bytes / seconds / 1e6, errors);
    } else {
        /* Latencies of the connections that succeeded; failed ones left 0 and are dropped. */
        long ok = 0;
        for (long i = 0; i < opt_total; i++)
            if (latencies_us[i] > 0)
                latencies_us[ok++] = latencies_us[i];
        qsort(latencies_us, (size_t)ok, sizeof *latencies_us, compare_u32);
#define PERCENTILE(p) (ok ? latencies_us[(long)((double)(ok - 1) * (p) + 0.5)] : 0u)
        long minimum = atomic_load(&reply_min);
        printf("conns=%ld errors=%ld seconds=%.3f conn_per_s=%.0f p50_us=%u p90_us=%u p99_us=%u max_us=%u "
               "reply_bytes_min=%ld reply_bytes_max=%ld\n",
               opt_total, errors, seconds, (double)ok / seconds, PERCENTILE(0.50), PERCENTILE(0.90),
               PERCENTILE(0.99), ok ? latencies_us[ok - 1] : 0u, minimum == LONG_MAX ? 0 : minimum,
               atomic_load(&reply_max));
#undef PERCENTILE
    }
    fflush(stdout);
    return errors > 0 ? 1 : 0;
}
