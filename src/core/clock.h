/* clock.h -- the time port. Nothing in core/ reads the system clock directly: the server
 * passes a real clock, tests pass one they move by hand. Times are Unix seconds, UTC. */
#ifndef TG_CLOCK_H
#define TG_CLOCK_H

#include <stdint.h>

typedef struct tg_clock {
    int64_t (*now)(void *ctx);
    void *ctx;
} tg_clock;

static inline int64_t tg_clock_now(const tg_clock *c)
{
    return c->now(c->ctx);
}

#endif
