/* metering.c -- meter and meter-event rules (see metering.h). */
#include "core/metering.h"

#include <stdio.h>
#include <string.h>

#include "base/str.h"
#include "core/metadata.h"

int tg_formula_parse(const char *s, tg_formula *out)
{
    if (strcmp(s, "sum") == 0)
        *out = TG_FORMULA_SUM;
    else if (strcmp(s, "count") == 0)
        *out = TG_FORMULA_COUNT;
    else if (strcmp(s, "last") == 0)
        *out = TG_FORMULA_LAST;
    else
        return -1;
    return 0;
}

const char *tg_formula_name(tg_formula f)
{
    return f == TG_FORMULA_COUNT ? "count" : f == TG_FORMULA_LAST ? "last" : "sum";
}

int tg_window_parse(const char *s, tg_window *out)
{
    if (strcmp(s, "hour") == 0)
        *out = TG_WINDOW_HOUR;
    else if (strcmp(s, "day") == 0)
        *out = TG_WINDOW_DAY;
    else
        return -1;
    return 0;
}

const char *tg_window_name(tg_window w)
{
    return w == TG_WINDOW_HOUR ? "hour" : w == TG_WINDOW_DAY ? "day" : NULL;
}

int64_t tg_window_seconds(tg_window w)
{
    return w == TG_WINDOW_HOUR ? 3600 : w == TG_WINDOW_DAY ? 86400 : 60;
}

int64_t tg_window_start(int64_t t, int64_t seconds)
{
    int64_t r = t % seconds;
    return r < 0 ? t - r - seconds : t - r;
}

int tg_meter_validate(const tg_meter *m, tg_err *err)
{
    if (!*m->display_name)
        return tg_err_set(err, TG_EINVAL, "display_name", "Invalid display_name: must not be empty.");
    if (!*m->event_name)
        return tg_err_set(err, TG_EINVAL, "event_name", "Invalid event_name: must not be empty.");
    if (!*m->customer_key)
        return tg_err_set(err, TG_EINVAL, "customer_mapping[event_payload_key]",
                          "Invalid customer_mapping[event_payload_key]: must not be empty.");
    if (!*m->value_key)
        return tg_err_set(err, TG_EINVAL, "value_settings[event_payload_key]",
                          "Invalid value_settings[event_payload_key]: must not be empty.");
    return TG_OK;
}

int tg_event_check_names(const char *event_name, const char *identifier, tg_err *err)
{
    if (!event_name || !*event_name)
        return tg_err_set(err, TG_EMISSING, "event_name", "Missing required param: event_name.");
    if (strlen(event_name) > TG_NAME_MAX)
        return tg_err_set(err, TG_EINVAL, "event_name",
                          "Invalid event_name: must be at most %d characters.", TG_NAME_MAX);
    if (identifier && (!*identifier || strlen(identifier) > TG_NAME_MAX))
        return tg_err_set(err, TG_EINVAL, "identifier",
                          "Invalid identifier: must be 1 to %d characters.", TG_NAME_MAX);
    return TG_OK;
}

/* Significant digits of a value the decimal parser accepted: from the first non-zero digit to
 * the last non-zero digit of the fraction, or to the units digit ("1000" has 4, "0.0025" 2,
 * "12.50" 3). Read off the text: cheaper than dividing a 128-bit value by ten. */
static int significant_digits(const char *v)
{
    if (*v == '-')
        v++;
    const char *dot = strchr(v, '.');
    size_t intlen = dot ? (size_t)(dot - v) : strlen(v);
    const char *frac = dot ? dot + 1 : "";
    size_t fraclen = strlen(frac);
    while (fraclen && frac[fraclen - 1] == '0')
        fraclen--;
    size_t i = 0;
    while (i < intlen && v[i] == '0')
        i++;
    if (i < intlen)
        return (int)(intlen - i + fraclen);
    size_t j = 0; /* no integer part: the fraction's leading zeros do not count */
    while (j < fraclen && frac[j] == '0')
        j++;
    return (int)(fraclen - j);
}

int tg_event_check(const tg_meter *m, tg_event *e, int64_t now, tg_err *err)
{
    char param[TG_NAME_MAX + 16];
    tg_strlcpy(e->meter_id, m->id, sizeof e->meter_id); /* refusals name the meter too */
    const char *cust = tg_metadata_get(&e->payload, m->customer_key);
    if (!cust || !*cust || strlen(cust) >= sizeof e->customer_id) {
        snprintf(param, sizeof param, "payload[%s]", m->customer_key);
        if (cust && *cust)
            return tg_err_set(err, TG_ECUSTOMER, param, "No such customer: '%s'", cust);
        return tg_err_set(err, TG_ENOCUSTKEY, param,
                          "Customer mapping key %s not found in payload.", m->customer_key);
    }
    tg_strlcpy(e->customer_id, cust, sizeof e->customer_id);

    e->value = TG_DEC_ONE;
    if (m->formula != TG_FORMULA_COUNT) {
        const char *v = tg_metadata_get(&e->payload, m->value_key);
        int code = !v                                      ? TG_ENOVALUE
                   : tg_dec_parse(v, strlen(v), &e->value) ? TG_EBADVALUE
                   : significant_digits(v) > TG_EVENT_VALUE_DIGITS ? TG_EVALUEDIGITS
                                                                   : TG_OK;
        if (code)
            snprintf(param, sizeof param, "payload[%s]", m->value_key);
        if (code == TG_ENOVALUE)
            return tg_err_set(err, code, param, "Value key %s not found in payload.",
                              m->value_key);
        if (code == TG_EBADVALUE)
            return tg_err_set(err, code, param,
                              "Invalid value '%.64s' for %s: must be a decimal number with at "
                              "most %d integer and %d fractional digits.",
                              v, m->value_key, TG_DEC_MAX_INT_DIGITS, TG_DEC_SCALE_DIGITS);
        if (code == TG_EVALUEDIGITS)
            return tg_err_set(err, code, param,
                              "The value in the event payload can have at most %d digits. "
                              "Received %.64s.",
                              TG_EVENT_VALUE_DIGITS, v);
    }
    if (e->timestamp < now - TG_EVENT_PAST_WINDOW)
        return tg_err_set(err, TG_ETOOOLD, "timestamp",
                          "The event timestamp cannot be more than 35 days in past. Expected a "
                          "timestamp greater than or equal to %lld.",
                          (long long)(now - TG_EVENT_PAST_WINDOW));
    if (e->timestamp > now + TG_EVENT_FUTURE_SLACK)
        return tg_err_set(err, TG_EFUTURE, "timestamp",
                          "The event timestamp cannot be more than 5 minutes in the future. "
                          "Expected a timestamp less than or equal to %lld.",
                          (long long)(now + TG_EVENT_FUTURE_SLACK));
    e->window = m->event_time_window;
    return TG_OK;
}

int tg_bucket_add(tg_bucket *b, int64_t ts, int64_t seq, tg_dec value)
{
    tg_dec sum;
    if (tg_dec_add(b->sum, value, &sum))
        return TG_EINVAL;
    b->sum = sum;
    b->count++;
    if (b->count == 1 || ts > b->last_ts || (ts == b->last_ts && seq > b->last_seq)) {
        b->last_ts = ts;
        b->last_seq = seq;
        b->last_value = value;
    }
    return TG_OK;
}

int tg_bucket_merge(tg_bucket *into, const tg_bucket *from)
{
    if (!from->count)
        return TG_OK;
    tg_dec sum;
    if (tg_dec_add(into->sum, from->sum, &sum))
        return TG_EINVAL;
    bool later = into->count == 0 || from->last_ts > into->last_ts ||
                 (from->last_ts == into->last_ts && from->last_seq > into->last_seq);
    into->sum = sum;
    into->count += from->count;
    if (later) {
        into->last_ts = from->last_ts;
        into->last_seq = from->last_seq;
        into->last_value = from->last_value;
    }
    return TG_OK;
}

tg_dec tg_bucket_value(const tg_bucket *b, tg_formula f)
{
    switch (f) {
    case TG_FORMULA_COUNT: return tg_dec_from_int(b->count);
    case TG_FORMULA_LAST: return b->count ? b->last_value : 0;
    case TG_FORMULA_SUM: break;
    }
    return b->sum;
}

int tg_summary_check_range(int64_t start, int64_t end, tg_window grouping, tg_err *err)
{
    int64_t grain = tg_window_seconds(grouping);
    const char *what = grouping == TG_WINDOW_HOUR  ? "hour"
                       : grouping == TG_WINDOW_DAY ? "UTC day"
                                                   : "minute";
    if (start % grain)
        return tg_err_set(err, TG_EINVAL, "start_time",
                          "Invalid start_time: must be aligned with %s boundaries.", what);
    if (end % grain)
        return tg_err_set(err, TG_EINVAL, "end_time",
                          "Invalid end_time: must be aligned with %s boundaries.", what);
    if (end <= start)
        return tg_err_set(err, TG_EINVAL, "end_time",
                          "Invalid end_time: must be after start_time.");
    return TG_OK;
}
