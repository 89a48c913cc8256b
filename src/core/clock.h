/* clock.h -- the time port. Nothing in core/ reads the system clock directly: the server
 * passes a real clock, tests pass one they move by hand. Times are Unix seconds, UTC. */
#ifndef TG_CLOCK_H
#define TG_CLOCK_H

#include <stdint.h>

typedef struct tg_clock {
    int64_t (*now)(void *ctx);
    void *ctx;
    /* Seconds on a clock that is never stepped, from any origin (the wall clock can be set
     * back and forth, by hand or at boot: the server passes CLOCK_BOOTTIME). NULL: now
     * itself. The identifier index ages entries by it (writer.c, "Identifier retention"). */
    int64_t (*elapsed)(void *ctx);
} tg_clock;

static inline int64_t tg_clock_now(const tg_clock *c)
{
    return c->now(c->ctx);
}

static inline int64_t tg_clock_elapsed(const tg_clock *c)
{
    return c->elapsed ? c->elapsed(c->ctx) : c->now(c->ctx);
}

#endif
