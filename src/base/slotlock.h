/* slotlock.h -- a reader-writer lock whose readers spread over slots.
 *
 * A pthread rwlock's readers all write the lock's word, so two threads taking it for reading
 * on every event pass its cache line back and forth between their cores. Here each thread
 * reads through a slot of its own (a rwlock on its own cache lines, chosen once per thread);
 * a writer takes every slot, in order. Reads cost what an uncontended rwlock costs; writes,
 * which are rare (a meter or customer created), cost TG_SLOTLOCK_SLOTS locks. Threads beyond
 * the slots share them, which is still correct.
 */
#ifndef TG_SLOTLOCK_H
#define TG_SLOTLOCK_H

#include <pthread.h>

#define TG_SLOTLOCK_SLOTS 8

typedef struct tg_slotlock {
    struct {
        pthread_rwlock_t lock;
        char pad[128 - sizeof(pthread_rwlock_t)]; /* no two slots share a cache line */
    } slot[TG_SLOTLOCK_SLOTS];
} tg_slotlock;

void tg_slotlock_init(tg_slotlock *l);
void tg_slotlock_destroy(tg_slotlock *l);
/* Takes the calling thread's slot for reading; pass the result to tg_slotlock_read_end. */
unsigned tg_slotlock_read(tg_slotlock *l);
void tg_slotlock_read_end(tg_slotlock *l, unsigned slot);
void tg_slotlock_write(tg_slotlock *l);
void tg_slotlock_write_end(tg_slotlock *l);

#endif
