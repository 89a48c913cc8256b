/* stream_json.h -- the meter event stream's body, decoded straight into events.
 *
 * A fast path beside the general JSON decoder (params.h), for the body that carries nearly
 * all of Tollgate's ingest: {"events":[{"event_name":..,"identifier":..,"timestamp":..,
 * "payload":{..}}, ...]}. It accepts only that shape with plain strings; for anything else it
 * declines, and the caller decodes the body the general way, which then accepts the same
 * events or names the error. So the fast path never decides an error and, when it accepts,
 * yields exactly the events the general way would (tests/unit/test_stream_json.c compares
 * the two on generated and mutated bodies).
 */
#ifndef TG_HTTP_STREAM_JSON_H
#define TG_HTTP_STREAM_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include "base/arena.h"
#include "core/model.h"

/* Decodes body[0..len) into *evs (n events, 1 <= n <= max_events, in the arena). Strings
 * are terminated in place: on success the body's quotes are overwritten and the events'
 * payloads point into it. False (the body unchanged) to decline: a shape or a string this
 * path does not take, more than max_events events, or no memory. */
bool tg_stream_json_decode(char *body, size_t len, size_t max_events, tg_arena *a,
                           tg_event **evs, size_t *n);

#endif
