/* slotlock.c -- see slotlock.h. A thread's slot is the next free one the first time it reads
 * (round robin), kept in a thread-local variable: the request loops, started together, get
 * slots of their own. */
#include "base/slotlock.h"

#include <stdatomic.h>

static atomic_uint next_slot;
static _Thread_local int thread_slot = -1;

void tg_slotlock_init(tg_slotlock *l)
{
    for (unsigned i = 0; i < TG_SLOTLOCK_SLOTS; i++)
        pthread_rwlock_init(&l->slot[i].lock, NULL);
}

void tg_slotlock_destroy(tg_slotlock *l)
{
    for (unsigned i = 0; i < TG_SLOTLOCK_SLOTS; i++)
        pthread_rwlock_destroy(&l->slot[i].lock);
}

unsigned tg_slotlock_read(tg_slotlock *l)
{
    if (thread_slot < 0)
        thread_slot = (int)(atomic_fetch_add(&next_slot, 1) % TG_SLOTLOCK_SLOTS);
    unsigned s = (unsigned)thread_slot;
    pthread_rwlock_rdlock(&l->slot[s].lock);
    return s;
}

void tg_slotlock_read_end(tg_slotlock *l, unsigned slot)
{
    pthread_rwlock_unlock(&l->slot[slot].lock);
}

void tg_slotlock_write(tg_slotlock *l)
{
    for (unsigned i = 0; i < TG_SLOTLOCK_SLOTS; i++)
        pthread_rwlock_wrlock(&l->slot[i].lock);
}

void tg_slotlock_write_end(tg_slotlock *l)
{
    for (unsigned i = TG_SLOTLOCK_SLOTS; i-- > 0;)
        pthread_rwlock_unlock(&l->slot[i].lock);
}
