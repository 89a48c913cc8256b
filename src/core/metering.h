/* metering.h -- the rules of meters and meter events, as pure functions.
 *
 * Nothing here does I/O: the service resolves meters and customers, then asks these
 * functions whether an event is acceptable and how it changes a minute bucket. Aggregation
 * is exact (tg_dec) and formula-aware:
 *   sum   -- the sum of values;
 *   count -- the number of events (values are not read);
 *   last  -- the value of the event with the latest timestamp (ties: the later received).
 */
#ifndef TG_METERING_H
#define TG_METERING_H

#include "base/err.h"
#include "core/model.h"

/* Parses "sum" / "count" / "last" (returns -1 when unknown). */
int tg_formula_parse(const char *s, tg_formula *out);
const char *tg_formula_name(tg_formula f);

/* Parses "hour" / "day" (returns -1 when unknown). */
int tg_window_parse(const char *s, tg_window *out);
const char *tg_window_name(tg_window w); /* NULL for TG_WINDOW_NONE */

/* Length of a window in seconds (60 for none: the bucket grain). */
int64_t tg_window_seconds(tg_window w);

/* Start of the window containing t (UTC; floor division, correct for negative t). */
int64_t tg_window_start(int64_t t, int64_t seconds);

/* Validates a new meter's fields (lengths, non-empty names). */
int tg_meter_validate(const tg_meter *m, tg_err *err);

/* Checks an event against its meter and the clock: customer key present, value present and
 * a decimal (sum and last), timestamp within [now - 35 days, now + 5 minutes]. On success
 * fills e->customer_id and e->value from the payload. customer existence is the caller's. */
int tg_event_check(const tg_meter *m, tg_event *e, int64_t now, tg_err *err);

/* Checks identifier and event name lengths (1..100). */
int tg_event_check_names(const char *event_name, const char *identifier, tg_err *err);

/* Adds one event to a bucket. */
int tg_bucket_add(tg_bucket *b, int64_t ts, int64_t seq, tg_dec value);

/* Folds bucket `from` into `into` (for summaries over many minutes). */
int tg_bucket_merge(tg_bucket *into, const tg_bucket *from);

/* The aggregate a bucket represents under formula f. */
tg_dec tg_bucket_value(const tg_bucket *b, tg_formula f);

/* Checks a summary request: start < end, both aligned to the grouping grain (minute, hour or
 * UTC day). */
int tg_summary_check_range(int64_t start, int64_t end, tg_window grouping, tg_err *err);

#endif
