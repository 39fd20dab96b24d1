/*
 * malloc-count: an LD_PRELOAD library that counts heap allocations.
 *
 *   cc -O2 -Wall -Wextra -shared -fPIC -o malloc-count.so malloc-count.c -ldl
 *   MALLOC_COUNT_FILE=/tmp/count LD_PRELOAD=./malloc-count.so program ...
 *
 * Counts the calls to malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign, valloc
 * and pvalloc (free is not counted) and, when the process exits through exit() or a return from
 * main, writes the total to the file named by MALLOC_COUNT_FILE as one line:
 *
 *   allocations=12345 malloc=... calloc=... realloc=... aligned=...
 *
 * A process that is killed by a signal writes nothing. Without MALLOC_COUNT_FILE the line goes
 * to standard error.
 *
 * The real functions are found with dlsym(RTLD_NEXT, ...), which can itself call calloc before
 * the real calloc is known; those few calls are served from a small static arena (and never
 * freed to the real allocator).
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_memalign)(size_t, size_t);
static void *(*real_valloc)(size_t);
static void *(*real_pvalloc)(size_t);

static atomic_ulong count_malloc, count_calloc, count_realloc, count_aligned;

/* The bootstrap arena: what dlsym allocates while the real functions are being looked up. */
static _Alignas(16) unsigned char arena[16384];
static size_t arena_used;
static int resolving;

static int in_arena(const void *pointer)
{
    return (const unsigned char *)pointer >= arena && (const unsigned char *)pointer < arena + sizeof arena;
}

static void *arena_allocate(size_t size)
{
    size_t start = (arena_used + 15) & ~(size_t)15;
    if (start + size > sizeof arena)
        return NULL;
    arena_used = start + size;
    return arena + start; /* static storage: already zero */
}

static void resolve(void)
{
    if (real_malloc || resolving)
        return;
    resolving = 1;
    real_calloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "calloc");
    real_malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
    real_realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
    real_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
    real_posix_memalign = (int (*)(void **, size_t, size_t))dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned_alloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "aligned_alloc");
    real_memalign = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "memalign");
    real_valloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "valloc");
    real_pvalloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "pvalloc");
    resolving = 0;
}

void *malloc(size_t size)
{
    resolve();
    if (!real_malloc)
        return arena_allocate(size);
    atomic_fetch_add_explicit(&count_malloc, 1, memory_order_relaxed);
    return real_malloc(size);
}

void *calloc(size_t count, size_t size)
{
    resolve();
    if (!real_calloc) {
        if (size && count > SIZE_MAX / size)
            return NULL;
        return arena_allocate(count * size);
    }
    atomic_fetch_add_explicit(&count_calloc, 1, memory_order_relaxed);
    return real_calloc(count, size);
}

void *realloc(void *pointer, size_t size)
{
    resolve();
    if (in_arena(pointer) || !real_realloc) {
        /* Moves a bootstrap block to the real heap (the old size is unknown: copy what fits). */
        void *moved = malloc(size);
        if (moved && pointer) {
            size_t available = (size_t)(arena + sizeof arena - (unsigned char *)pointer);
            memcpy(moved, pointer, size < available ? size : available);
        }
        return moved;
    }
    atomic_fetch_add_explicit(&count_realloc, 1, memory_order_relaxed);
    return real_realloc(pointer, size);
}

void free(void *pointer)
{
    if (!pointer || in_arena(pointer))
        return;
    resolve();
    if (real_free)
        real_free(pointer);
}

int posix_memalign(void **out, size_t alignment, size_t size)
{
    resolve();
    atomic_fetch_add_explicit(&count_aligned, 1, memory_order_relaxed);
    return real_posix_memalign(out, alignment, size);
}

void *aligned_alloc(size_t alignment, size_t size)
{
    resolve();
    atomic_fetch_add_explicit(&count_aligned, 1, memory_order_relaxed);
    return real_aligned_alloc(alignment, size);
}

void *memalign(size_t alignment, size_t size)
{
    resolve();
    atomic_fetch_add_explicit(&count_aligned, 1, memory_order_relaxed);
    return real_memalign(alignment, size);
}

void *valloc(size_t size)
{
    resolve();
    atomic_fetch_add_explicit(&count_aligned, 1, memory_order_relaxed);
    return real_valloc(size);
}

void *pvalloc(size_t size)
{
    resolve();
    atomic_fetch_add_explicit(&count_aligned, 1, memory_order_relaxed);
    return real_pvalloc(size);
}

/* Writes the line with write(2) only: no stdio, which could allocate or be closed by now. */
static char *append_number(char *out, const char *label, unsigned long value)
{
    char digits[24];
    int n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    size_t label_length = strlen(label);
    memcpy(out, label, label_length);
    out += label_length;
    while (n)
        *out++ = digits[--n];
    return out;
}

__attribute__((destructor)) static void report(void)
{
    unsigned long m = atomic_load(&count_malloc), c = atomic_load(&count_calloc), r = atomic_load(&count_realloc),
                  a = atomic_load(&count_aligned);
    char line[256], *p = line;
    p = append_number(p, "allocations=", m + c + r + a);
    p = append_number(p, " malloc=", m);
    p = append_number(p, " calloc=", c);
    p = append_number(p, " realloc=", r);
    p = append_number(p, " aligned=", a);
    *p++ = '\n';
    const char *path = getenv("MALLOC_COUNT_FILE");
    int fd = path && *path ? open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : 2;
    if (fd < 0)
        return;
    ssize_t written = write(fd, line, (size_t)(p - line));
    (void)written;
    if (fd != 2)
        close(fd);
}
