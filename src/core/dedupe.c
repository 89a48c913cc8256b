/* dedupe.c -- partitioned open-addressing index of identifier hashes (see dedupe.h).
 *
 * Hash bits: the top 6 choose the partition, bits 0..31 are the tag, and the tag chooses the
 * home slot by multiply-shift over the partition's size (any size, not only powers of two).
 * A slot is tag << 32 | locator; 0 is empty, which is why locators start at 1.
 *
 * Memory: a partition grows by a quarter when it passes 85% full, so it stays between 68% and
 * 85% full (8 bytes a slot), and growing one partition needs only its added quarter and room
 * to set its entries aside (below): never a second copy of the index.
 * The partitions' sizes are staggered: partition i starts as if it had grown i/64 of a step,
 * so they pass their thresholds at different counts and the index grows smoothly, at about
 * 10.55 bytes an identifier whatever the count. Growing in step, all partitions grew within a
 * few thousand identifiers of each other: a staircase between 9.5 and 11.6 bytes an
 * identifier (304 MiB at 33M identifiers, 373 MiB at 34M).
 *
 * Slot arrays are whole pages mapped with mmap, not taken from malloc, so a grown partition's
 * old memory can never linger in the heap (from malloc, with glibc's mmap threshold risen to
 * 32 MiB, every outgrown array stayed there as a hole too small for the next size: measured,
 * 155 MiB of free but resident heap at 30M identifiers). A partition grows in place: its
 * entries are copied aside to a scratch array the index keeps (room for the largest
 * partition's entries: about 1/75 of the index), the array is
 * extended with mremap (which moves page table entries, never the pages), cleared, and the
 * entries placed again. Only the added quarter is new memory. On the benchmark's VM, memory
 * the process has not touched before costs about 4.4 us a 4 KiB page at first touch even
 * when mapped with MAP_POPULATE (the host backs it then), and a page fault about 7 us;
 * growing into a fresh array paid that for the whole array at every growth. Raw inserts,
 * same run: 31-32 ns per entry moved at 5M identifiers into fresh arrays, 22-23 in place; at
 * 30M, 27 and 23. Fewer mmap and munmap calls also mean fewer TLB shootdowns across the
 * server's CPUs.
 *
 * Huge pages: every lookup lands on a random slot, so once the index outgrows what the TLB
 * maps with 4 KiB pages (a few MiB), nearly every lookup also walks the page tables, and on a
 * virtual machine a walk is itself several cache misses. Arrays of 2 MiB and more are on
 * transparent huge pages (slots_extend), but partitions reach 2 MiB only at 12.7M
 * identifiers. So once the index holds HUGE_FROM (1M) identifiers, a partition that grows
 * grows to at least 2 MiB (when the kernel's transparent huge pages are not "never"): within
 * a quarter more identifiers every partition has, and the index is 128-160 MiB instead of
 * 11-128 MiB until 12.7M (the 10.55 bytes an identifier above hold outside that range).
 * Measured in batches of 100 after the benchmark's single-event phases (2.4M stored, then
 * 11M more), fresh servers alternating: the writer's prefetch of the slot had been 10-14% of
 * the server's samples, and the server's CPU an event fell from 1.19-1.37 to 1.07-1.17 us.
 */
#include "core/dedupe.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define PARTITION_BITS 6
#define PARTITIONS (1 << PARTITION_BITS)
_Static_assert(PARTITIONS == TG_DEDUPE_PARTITIONS, "dedupe.h exports the partition count");
#define LOAD_NUM 85 /* grow past 85% full */
#define GROWTH 1.25
#define STAGGER 1.0034927 /* GROWTH^(1/PARTITIONS) */
#define PAGE_SLOTS 512 /* slots in 4 KiB: arrays are sized in whole pages */
#define HUGE_PAGE (2u << 20)
#define HUGE_FROM 1000000 /* identifiers: from here on a partition grows to 2 MiB at least */
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25 /* Linux 6.1; older kernels refuse it and the range keeps small pages */
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older kernels refuse it and pages fault in */
#endif

typedef struct partition {
    uint64_t *slots;
    size_t size;
    size_t used;
    double target; /* the unrounded size: size is target rounded up to whole pages */
} partition;

struct tg_dedupe {
    partition parts[PARTITIONS];
    size_t count, bytes;
    uint64_t *scratch; /* a growing partition's entries, set aside while it is rehashed */
    size_t scratch_cap;
    bool promote; /* grow partitions to huge pages past HUGE_FROM: the kernel gives them */
};

bool tg_dedupe_huge_pages_enabled(void)
{
    char mode[128] = "";
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f)
        return false;
    bool read = fgets(mode, sizeof mode, f) != NULL;
    fclose(f);
    return read && !strstr(mode, "[never]");
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* The last n (< 8) bytes of a string as the low bytes of a word, as memcpy into a zeroed word
 * would give on a little-endian machine. Neither memcpy nor byte stores: a word read back
 * from bytes just stored cannot be forwarded from the store buffer and waits for the stores
 * to reach the cache (perf: a fifth of this function's cycles). When the string had 8 bytes
 * before the tail (after_words), the tail is the top of the word that ends with it. */
static uint64_t tail_word(const unsigned char *s, size_t n, bool after_words)
{
    if (n == 0)
        return 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (after_words) {
        uint64_t w;
        memcpy(&w, s + n - 8, 8);
        return w >> (64 - 8 * n);
    }
#else
    (void)after_words;
#endif
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++)
        w |= (uint64_t)s[i] << (8 * i);
    return w;
}

uint64_t tg_dedupe_hash(uint64_t seed, const char *account, int livemode, const char *identifier)
{
    /* A keyed multiply-mix over 8-byte words: cheap, and with a per-directory seed an
     * outsider cannot aim collisions at it. Exactness never depends on it (see dedupe.h). */
    uint64_t h = mix(seed ^ 0x9E3779B97F4A7C15ULL ^ (uint64_t)livemode);
    const char *parts[2] = {account, identifier};
    for (int p = 0; p < 2; p++) {
        const unsigned char *s = (const unsigned char *)parts[p];
        size_t n = strlen(parts[p]);
        while (n >= 8) {
            uint64_t w;
            memcpy(&w, s, 8);
            h = mix(h ^ w) * 0x9E3779B97F4A7C15ULL;
            s += 8;
            n -= 8;
        }
        h = mix(h ^ tail_word(s, n, s != (const unsigned char *)parts[p]) ^ ((uint64_t)n << 56)) *
            0x9E3779B97F4A7C15ULL;
    }
    return mix(h);
}

static size_t home(uint64_t tag, size_t size)
{
    /* Scramble the tag (nearby tags must not cluster), then map it onto [0, size). */
    uint32_t x = (uint32_t)((tag * 0x9E3779B97F4A7C15ULL) >> 32);
    return (size_t)(((uint64_t)x * size) >> 32);
}

/* An inaccessible reservation of bytes starting on a 2 MiB boundary, or NULL. */
static char *reserve_aligned(size_t bytes)
{
    char *p = mmap(NULL, bytes + HUGE_PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    char *start = (char *)(((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (start > p)
        munmap(p, (size_t)(start - p));
    munmap(start + bytes, (size_t)(p + HUGE_PAGE - start));
    return start;
}

/* A zeroed array of n slots (n a multiple of PAGE_SLOTS), or NULL. A new index's arrays are
 * small; they reach 2 MiB only by growing (slots_extend). */
static uint64_t *slots_map(size_t n)
{
    void *p = mmap(NULL, n * sizeof(uint64_t), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* Extends an array of oldn slots to n, keeping its pages: the tail is new, zeroed memory.
 * Arrays of 2 MiB and more start on a 2 MiB boundary and ask for transparent huge pages:
 * every lookup lands on a random slot, and with 4 KiB pages each one also missed the TLB (a
 * page walk, itself missing the cache) once the index outgrew the caches. A 2 MiB range
 * holding any small page is not given a huge one, so an array that reaches 2 MiB starts
 * afresh (grow has set its entries aside), and the range where a grown array's old pages
 * end is collapsed into a huge page. Returns the array (perhaps moved), or NULL with the old
 * one untouched. */
static uint64_t *slots_extend(uint64_t *old, size_t oldn, size_t n)
{
    size_t oldbytes = oldn * sizeof(uint64_t), bytes = n * sizeof(uint64_t);
    void *p;
    if (bytes < HUGE_PAGE) {
        p = mremap(old, oldbytes, bytes, MREMAP_MAYMOVE);
        if (p == MAP_FAILED)
            return NULL;
        /* Populate the tail now, as MAP_POPULATE does: the rehash writes nearly all of it. */
        madvise((char *)p + oldbytes, bytes - oldbytes, MADV_POPULATE_WRITE);
        return p;
    }
    char *start = reserve_aligned(bytes);
    if (!start)
        return NULL;
    if (oldbytes < HUGE_PAGE) {
        p = mmap(start, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                 -1, 0);
        if (p == MAP_FAILED) {
            munmap(start, bytes);
            return NULL;
        }
        madvise(p, bytes, MADV_HUGEPAGE); /* advice: without it, 4 KiB pages still work */
        madvise(p, bytes, MADV_POPULATE_WRITE);
        munmap(old, oldbytes);
        return p;
    }
    p = mremap(old, oldbytes, bytes, MREMAP_MAYMOVE | MREMAP_FIXED, start);
    if (p == MAP_FAILED) {
        munmap(start, bytes);
        return NULL;
    }
    madvise(p, bytes, MADV_HUGEPAGE);
    madvise((char *)p + oldbytes, bytes - oldbytes, MADV_POPULATE_WRITE);
    size_t mixed = oldbytes / HUGE_PAGE * HUGE_PAGE;
    if (mixed + HUGE_PAGE <= bytes && oldbytes % HUGE_PAGE)
        madvise((char *)p + mixed, HUGE_PAGE, MADV_COLLAPSE); /* Linux 6.1; best effort */
    return p;
}

static void slots_unmap(uint64_t *slots, size_t n)
{
    if (slots)
        munmap(slots, n * sizeof(uint64_t));
}

tg_dedupe *tg_dedupe_new(void)
{
    tg_dedupe *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->promote = tg_dedupe_huge_pages_enabled();
    double target = PAGE_SLOTS;
    for (int i = 0; i < PARTITIONS; i++) {
        d->parts[i].slots = slots_map(PAGE_SLOTS);
        if (!d->parts[i].slots) {
            tg_dedupe_free(d);
            return NULL;
        }
        d->parts[i].size = PAGE_SLOTS;
        d->parts[i].target = target;
        target *= STAGGER;
        d->bytes += PAGE_SLOTS * sizeof(uint64_t);
    }
    return d;
}

void tg_dedupe_free(tg_dedupe *d)
{
    if (!d)
        return;
    for (int i = 0; i < PARTITIONS; i++)
        slots_unmap(d->parts[i].slots, d->parts[i].size);
    free(d->scratch);
    free(d);
}

int tg_dedupe_find(const tg_dedupe *d, uint64_t h, uint64_t *out, int max)
{
    const partition *p = &d->parts[h >> (64 - PARTITION_BITS)];
    uint64_t tag = h & 0xFFFFFFFFULL;
    int n = 0;
    for (size_t i = home(tag, p->size);; i = i + 1 == p->size ? 0 : i + 1) {
        uint64_t s = p->slots[i];
        if (!s)
            return n;
        if ((s >> 32) == tag && n < max)
            out[n++] = s & 0xFFFFFFFFULL;
    }
}

void tg_dedupe_prefetch(const tg_dedupe *d, uint64_t h)
{
    const partition *p = &d->parts[h >> (64 - PARTITION_BITS)];
    __builtin_prefetch(&p->slots[home(h & 0xFFFFFFFFULL, p->size)]);
}

static void place(partition *p, uint64_t v)
{
    size_t i = home(v >> 32, p->size);
    while (p->slots[i])
        i = i + 1 == p->size ? 0 : i + 1;
    p->slots[i] = v;
}

static int grow(tg_dedupe *d, partition *p)
{
    size_t oldsize = p->size, size;
    double target = p->target;
    /* Small arrays: rounding to pages may need more than one step; past HUGE_FROM identifiers,
     * as many steps as reach a huge page (the partitions stay staggered: each keeps its own
     * sequence of targets). */
    do {
        target *= GROWTH;
        size = ((size_t)target + PAGE_SLOTS - 1) / PAGE_SLOTS * PAGE_SLOTS;
    } while (size <= oldsize ||
             (d->promote && d->count >= HUGE_FROM && size < HUGE_PAGE / sizeof(uint64_t)));
    if (p->used > d->scratch_cap) {
        /* realloc: past glibc's mmap threshold it moves pages with mremap, so only the
         * added part is new memory (see above) */
        uint64_t *scratch = realloc(d->scratch, p->used * sizeof *scratch);
        if (!scratch)
            return -1;
        d->scratch = scratch;
        d->scratch_cap = p->used;
    }
    size_t n = 0;
    for (size_t i = 0; i < oldsize; i++)
        if (p->slots[i])
            d->scratch[n++] = p->slots[i];
    uint64_t *slots = slots_extend(p->slots, oldsize, size);
    if (!slots)
        return -1;
    memset(slots, 0, oldsize * sizeof *slots);
    p->slots = slots;
    p->size = size;
    p->target = target;
    for (size_t i = 0; i < n; i++)
        place(p, d->scratch[i]);
    d->bytes += (size - oldsize) * sizeof(uint64_t);
    return 0;
}

int tg_dedupe_insert(tg_dedupe *d, uint64_t h, uint64_t locator)
{
    if (locator == 0 || locator > TG_DEDUPE_ROW)
        return -1;
    partition *p = &d->parts[h >> (64 - PARTITION_BITS)];
    if ((p->used + 1) * 100 > p->size * LOAD_NUM && grow(d, p))
        return -1;
    place(p, (h & 0xFFFFFFFFULL) << 32 | locator);
    p->used++;
    d->count++;
    return 0;
}

/* Whether slot k lies cyclically in (i, j]. */
static bool between(size_t i, size_t k, size_t j)
{
    return i <= j ? i < k && k <= j : i < k || k <= j;
}

/* Entries are deleted in place, by backward shift: linear probing cannot simply empty a slot
 * (an entry further along the same run would become unreachable), so each entry after the
 * hole that may move into it (its home is not between the hole and itself) does, and the
 * hole moves to where it was, until an empty slot ends the run. An entry not yet looked at
 * only moves to a slot at or after the scan's, and the one moved into the scanned slot is
 * looked at next, so none is skipped; an entry of a run that wraps past the array's end may
 * move back into its tail and be looked at twice (keep() must be pure). One read of the
 * array and a few writes per removal: at 30M
 * identifiers, pruning an hour of 36 days' took 3.2-3.5 ms a partition this way, 8.0-8.4 ms
 * when the kept entries were set aside and placed again, as grow does. */
size_t tg_dedupe_prune(tg_dedupe *d, int part, bool (*keep)(uint64_t locator, void *ctx),
                       void *ctx)
{
    partition *p = &d->parts[part];
    size_t removed = 0;
    for (size_t i = 0; i < p->size;) {
        uint64_t v = p->slots[i];
        if (!v || keep(v & 0xFFFFFFFFULL, ctx)) {
            i++;
            continue;
        }
        size_t hole = i;
        for (size_t j = hole + 1 == p->size ? 0 : hole + 1; p->slots[j];
             j = j + 1 == p->size ? 0 : j + 1)
            if (!between(hole, home(p->slots[j] >> 32, p->size), j)) {
                p->slots[hole] = p->slots[j];
                hole = j;
            }
        p->slots[hole] = 0;
        removed++; /* slot i now holds what moved into it, or nothing: look at it again */
    }
    p->used -= removed;
    d->count -= removed;
    return removed;
}

size_t tg_dedupe_count(const tg_dedupe *d)
{
    return d->count;
}

size_t tg_dedupe_bytes(const tg_dedupe *d)
{
    return d->bytes;
}
