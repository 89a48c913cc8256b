/* dedupe.h -- the in-memory index of meter event identifiers.
 *
 * Every stored event is entered under a 64-bit keyed hash of (account, mode, identifier).
 * A slot is 8 bytes: a 32-bit tag taken from the hash and a 32-bit locator saying where the
 * event is stored (a block sequence number, wrapped to 32 bits by the writer, or TG_DEDUPE_ROW
 * for events kept one per row).
 * A lookup returns the locators whose tag matches; the caller confirms each candidate against
 * the stored identifier, so the answer is exact: a tag match that is not the same identifier
 * (a new identifier meets a stored tag of its partition with odds entries/64/2^32: one
 * lookup in about 9,000 at 30 million entries) costs one read, never a wrong refusal.
 *
 * The table is split into 64 partitions chosen by the top 6 hash bits, each an
 * open-addressing array with linear probing whose home slot comes from the tag, so a partition
 * can be rehashed from its slots alone. Each partition grows by a quarter on its own at 85%
 * load: growth never needs twice the memory of the whole index, and the partitions are
 * staggered so that the index grows smoothly at about 10.55 bytes an identifier (see
 * dedupe.c). Entries leave only by tg_dedupe_prune, a partition at a time; partitions never
 * shrink, so the index's memory is the most it has ever held, which under a retention window
 * (writer.c, "Identifier retention") is bounded by the window's events.
 * Not thread-safe: the writer thread owns it.
 */
#ifndef TG_DEDUPE_H
#define TG_DEDUPE_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#define TG_DEDUPE_ROW ((uint64_t)0xFFFFFFFFULL) /* stored as a row: look it up by identifier */
#define TG_DEDUPE_MAX_CANDIDATES 8
#define TG_DEDUPE_PARTITIONS 64

typedef struct tg_dedupe tg_dedupe;

/* Returns a new empty index, or NULL when out of memory. */
tg_dedupe *tg_dedupe_new(void);
void tg_dedupe_free(tg_dedupe *d);

/* The keyed hash of an identifier in a scope. seed is per data directory. */
uint64_t tg_dedupe_hash(uint64_t seed, const char *account, int livemode, const char *identifier);

/* Writes up to max locators whose tag matches h into out; returns how many. */
int tg_dedupe_find(const tg_dedupe *d, uint64_t h, uint64_t *out, int max);

/* Starts loading the memory a lookup of h will read (call a few lookups ahead). */
void tg_dedupe_prefetch(const tg_dedupe *d, uint64_t h);

/* Adds h -> locator (1 <= locator <= TG_DEDUPE_ROW). Returns 0, or -1 when out of memory. */
int tg_dedupe_insert(tg_dedupe *d, uint64_t h, uint64_t locator);

/* Removes the entries of partition part (0 <= part < TG_DEDUPE_PARTITIONS) whose locator
 * keep() refuses; returns how many. keep() must answer the same for the same locator (it
 * may be asked twice). Allocates nothing. */
size_t tg_dedupe_prune(tg_dedupe *d, int part, bool (*keep)(uint64_t locator, void *ctx),
                       void *ctx);

/* Whether the kernel may back an madvise(MADV_HUGEPAGE) range with huge pages (transparent
 * huge pages not "never"): without them, partitions grown to 2 MiB early would cost memory
 * for nothing, and they are not (see dedupe.c, "Huge pages"). */
bool tg_dedupe_huge_pages_enabled(void);

/* Number of entries, and bytes of slot memory (for metrics). */
size_t tg_dedupe_count(const tg_dedupe *d);
size_t tg_dedupe_bytes(const tg_dedupe *d);

#endif
