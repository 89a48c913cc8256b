/* test_stream_json.c -- the stream's fast decoder against the general way.
 *
 * http/stream_json.h promises two things: when it accepts a body, the events are exactly
 * those the general way (the parameter tree and the stream handler's reader,
 * tg_stream_events_general) reads from the same body; when it declines, the body is as it
 * was, for the general way to read. Each test here decodes a body both ways and checks the
 * promise, over generated bodies of the shape clients send (which the fast path must take,
 * or it is useless), over named variations at the edge of its rules, and over every
 * truncation and many single-byte changes of generated bodies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/buf.h"
#include "http/api.h"
#include "http/stream_json.h"

#define MAX_EVENTS 50

static bool same_event(const tg_event *a, const tg_event *b)
{
    if (strcmp(a->event_name, b->event_name) || strcmp(a->identifier, b->identifier) ||
        a->timestamp != b->timestamp || a->payload.n != b->payload.n)
        return false;
    for (size_t i = 0; i < a->payload.n; i++)
        if (strcmp(a->payload.items[i].key, b->payload.items[i].key) ||
            strcmp(a->payload.items[i].value, b->payload.items[i].value))
            return false;
    return true;
}

/* Decodes body[0..len) both ways; fails the test when the promise breaks. True when the fast
 * path accepted. */
static bool check_body(const char *body, size_t len)
{
    char *fast_body = malloc(len + 1), *general_body = malloc(len + 1);
    assert_non_null(fast_body);
    assert_non_null(general_body);
    memcpy(fast_body, body, len);
    memcpy(general_body, body, len);
    fast_body[len] = general_body[len] = '\0';

    tg_arena fast_arena;
    tg_arena_init(&fast_arena, 0);
    tg_event *fast = NULL;
    size_t nfast = 0;
    bool accepted = tg_stream_json_decode(fast_body, len, MAX_EVENTS, &fast_arena, &fast, &nfast);

    tg_server_config cfg = {.max_stream_events = MAX_EVENTS};
    tg_req req;
    memset(&req, 0, sizeof req);
    req.cfg = &cfg;
    tg_arena_init(&req.arena, 0);
    req.params = tg_params_new(&req.arena);
    assert_non_null(req.params);
    req.body = general_body;
    req.body_len = len;
    tg_event *general = NULL;
    size_t ngeneral = 0;
    bool general_ok = tg_stream_events_general(&req, &general, &ngeneral);

    if (accepted) {
        if (!general_ok)
            fail_msg("fast path accepted what the general way refuses (%s): %.*s", req.err.msg,
                     (int)len, body);
        assert_int_equal(nfast, ngeneral);
        for (size_t i = 0; i < nfast; i++)
            if (!same_event(&fast[i], &general[i]))
                fail_msg("event %zu differs between the ways: %.*s", i, (int)len, body);
    } else if (memcmp(fast_body, body, len) != 0) {
        fail_msg("a declined body was not restored: %.*s", (int)len, body);
    }
    tg_arena_free(&fast_arena);
    tg_arena_free(&req.arena);
    free(fast_body);
    free(general_body);
    return accepted;
}

static bool check(const char *body)
{
    return check_body(body, strlen(body));
}

/* ---------------------------------------------------------------- generated bodies */

static uint64_t rng = 88172645463325252ULL;
static uint64_t next_rand(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}
static int pick(int n)
{
    return (int)(next_rand() % (uint64_t)n);
}

static void put_char(tg_buf *b, char c)
{
    tg_buf_append(b, &c, 1);
}

static void put_ws(tg_buf *b)
{
    static const char *const ws[] = {"", "", "", " ", "\n  ", "\t", "\r\n"};
    tg_buf_puts(b, ws[pick(7)]);
}

/* A string of printable ASCII without quote or backslash, JSON's structural bytes among them. */
static void put_plain(tg_buf *b, int min, int max)
{
    static const char alphabet[] = "abcxyz_-0123456789 {}[],:./ABC";
    int n = min + pick(max - min + 1);
    put_char(b, '"');
    for (int i = 0; i < n; i++)
        put_char(b, alphabet[pick((int)sizeof alphabet - 1)]);
    put_char(b, '"');
}

static void put_member(tg_buf *b, const char *key, int *count)
{
    if ((*count)++)
        put_char(b, ',');
    put_ws(b);
    tg_buf_printf(b, "\"%s\"", key);
    put_ws(b);
    put_char(b, ':');
    put_ws(b);
}

static void put_event(tg_buf *b)
{
    int order[4] = {0, 1, 2, 3}, count = 0;
    for (int i = 3; i > 0; i--) {
        int j = pick(i + 1), t = order[i];
        order[i] = order[j], order[j] = t;
    }
    put_char(b, '{');
    for (int i = 0; i < 4; i++) {
        switch (order[i]) {
        case 0:
            put_member(b, "event_name", &count);
            put_plain(b, 1, 12);
            break;
        case 1:
            if (pick(4)) {
                put_member(b, "identifier", &count);
                put_plain(b, 0, 30);
            }
            break;
        case 2:
            if (pick(3)) {
                put_member(b, "timestamp", &count);
                tg_buf_printf(b, "\"20%02d-%02d-%02dT%02d:%02d:%02d%s\"", pick(40), 1 + pick(12),
                              1 + pick(28), pick(24), pick(60), pick(60),
                              pick(2) ? "Z" : "+01:30");
            }
            break;
        default: {
            put_member(b, "payload", &count);
            put_char(b, '{');
            int keys = pick(5);
            for (int k = 0; k < keys; k++) {
                if (k)
                    put_char(b, ',');
                put_ws(b);
                tg_buf_printf(b, "\"k%d\"", k); /* distinct keys */
                put_ws(b);
                put_char(b, ':');
                put_plain(b, 0, 10);
            }
            put_ws(b);
            put_char(b, '}');
        }
        }
    }
    put_ws(b);
    put_char(b, '}');
}

static void generate(tg_buf *b, int events)
{
    tg_buf_reset(b);
    put_ws(b);
    tg_buf_puts(b, "{");
    put_ws(b);
    tg_buf_puts(b, "\"events\"");
    put_ws(b);
    tg_buf_puts(b, ":[");
    for (int i = 0; i < events; i++) {
        if (i)
            put_char(b, ',');
        put_ws(b);
        put_event(b);
    }
    put_ws(b);
    tg_buf_puts(b, "]}");
    put_ws(b);
}

static void test_generated_bodies_are_taken(void **state)
{
    (void)state;
    tg_buf b;
    tg_buf_init(&b, 1u << 20);
    for (int i = 0; i < 3000; i++) {
        generate(&b, 1 + pick(12));
        if (!check_body(b.data, b.len))
            fail_msg("the fast path declined a body of the usual shape: %s", b.data);
    }
    tg_buf_free(&b);
}

static void test_every_truncation(void **state)
{
    (void)state;
    tg_buf b;
    tg_buf_init(&b, 1u << 20);
    for (int i = 0; i < 40; i++) {
        generate(&b, 1 + pick(3));
        for (size_t cut = 0; cut < b.len; cut++)
            check_body(b.data, cut);
    }
    tg_buf_free(&b);
}

static void test_single_byte_changes(void **state)
{
    (void)state;
    static const char bytes[] = {'"', '\\', '\0', '\x01', '\x1f', '\x7f', '\xc3', '\xff', '{',
                                 '}',  '[',  ']',  ',',    ':',    ' ',    'a',    '0',    'n'};
    tg_buf b, m;
    tg_buf_init(&b, 1u << 20);
    tg_buf_init(&m, 1u << 20);
    size_t accepted = 0, total = 0;
    for (int i = 0; i < 4000; i++) {
        generate(&b, 1 + pick(4));
        size_t at = (size_t)pick((int)b.len);
        char byte = bytes[pick((int)sizeof bytes)];
        tg_buf_reset(&m);
        tg_buf_append(&m, b.data, at);
        if (pick(2)) { /* replace */
            tg_buf_append(&m, &byte, 1);
            tg_buf_append(&m, b.data + at + 1, b.len - at - 1);
        } else { /* insert */
            tg_buf_append(&m, &byte, 1);
            tg_buf_append(&m, b.data + at, b.len - at);
        }
        accepted += check_body(m.data, m.len);
        total++;
    }
    /* changes inside strings keep many bodies valid: both outcomes must have been seen */
    assert_true(accepted > 0 && accepted < total);
    tg_buf_free(&b);
    tg_buf_free(&m);
}

/* ---------------------------------------------------------------- named edges */

#define EV(fields) "{\"events\":[{" fields "}]}"
#define BASIC "\"event_name\":\"api\",\"payload\":{\"stripe_customer_id\":\"cus_1\",\"value\":\"3\"}"

static void test_taken(void **state)
{
    (void)state;
    assert_true(check(EV(BASIC)));
    assert_true(check(EV(BASIC ",\"identifier\":\"\""))); /* "" is no identifier */
    assert_true(check(EV(BASIC ",\"timestamp\":\"\"")));  /* "" is now */
    assert_true(check(EV(BASIC ",\"timestamp\":\"2024-02-29T23:59:60.123-11:30\"")));
    assert_true(check(EV("\"event_name\":\"api\",\"payload\":{}")));
    assert_true(check(" \n{ \"events\" : [ {" BASIC "} , {" BASIC "} ] } \r\n"));
    /* the longest names the general way takes */
    char body[1024];
    snprintf(body, sizeof body, EV("\"event_name\":\"%0*d\",\"identifier\":\"%0*d\",\"payload\":{}"),
             TG_NAME_MAX, 7, TG_NAME_MAX, 8);
    assert_true(check(body));
    /* exactly MAX_EVENTS events */
    tg_buf b;
    tg_buf_init(&b, 1u << 20);
    tg_buf_puts(&b, "{\"events\":[");
    for (int i = 0; i < MAX_EVENTS; i++)
        tg_buf_printf(&b, "%s{" BASIC "}", i ? "," : "");
    tg_buf_puts(&b, "]}");
    assert_true(check(b.data));
    tg_buf_free(&b);
}

static void test_declined(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "",
        "{}",
        "[]",
        "{\"events\":[]}",
        "{\"events\":{}}",
        "{\"events\":[1]}",
        "{\"events\":[{}]}",
        "{\"events\":[{" BASIC "}],\"extra\":1}",
        "{\"events\":[{" BASIC "}]} x",
        "{\"events\":[{" BASIC "}]",
        "{\"events\":[{" BASIC "},]}",
        EV(BASIC ",\"event_name\":\"twice\""),
        EV(BASIC ",\"unknown\":\"x\""),
        EV(BASIC ",\"identifier\":null"),
        EV(BASIC ",\"identifier\":12"),
        EV(BASIC ",\"timestamp\":1700000000"),
        EV(BASIC ",\"timestamp\":\"yesterday\""),
        EV(BASIC ",\"timestamp\":\"2023-02-29T00:00:00Z\""),
        EV("\"event_name\":\"\",\"payload\":{}"),
        EV("\"event_name\":\"api\""),
        /* no payload, with enough braces elsewhere that the bound on events does not decline */
        "{\"events\":[{\"event_name\":\"api\",\"payload\":{\"v\":\"{\"}},{\"event_name\":\"api\"}]}",
        EV("\"event_name\":\"api\",\"payload\":\"\""),
        EV("\"event_name\":\"api\",\"payload\":{\"a\":\"1\",\"a\":\"2\"}"),
        EV("\"event_name\":\"api\",\"payload\":{\"a\":1}"),
        EV("\"event_name\":\"api\",\"payload\":{\"a\":{\"b\":\"c\"}}"),
        EV("\"event_name\":\"a\\u0070i\",\"payload\":{}"),
        EV("\"event_name\":\"api\",\"payload\":{\"name\":\"caf\xc3\xa9\"}"),
        EV("\"event_name\":\"api\",\"payload\":{\"v\":\"tab\there\"}"),
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++)
        if (check(bodies[i]))
            fail_msg("the fast path took a body it must decline: %s", bodies[i]);

    char body[2048];
    snprintf(body, sizeof body, EV("\"event_name\":\"%0*d\",\"payload\":{}"), TG_NAME_MAX + 1, 7);
    assert_false(check(body));
    snprintf(body, sizeof body, EV(BASIC ",\"identifier\":\"%0*d\""), TG_NAME_MAX + 1, 7);
    assert_false(check(body));
    snprintf(body, sizeof body, EV(BASIC ",\"timestamp\":\"2024-01-01T00:00:00.%057dZ\""), 1);
    assert_false(check(body)); /* 65 characters: past the general way's limit */
    tg_buf b;
    tg_buf_init(&b, 1u << 20);
    tg_buf_puts(&b, "{\"events\":[");
    for (int i = 0; i <= MAX_EVENTS; i++)
        tg_buf_printf(&b, "%s{" BASIC "}", i ? "," : "");
    tg_buf_puts(&b, "]}");
    assert_false(check(b.data)); /* one too many: the general way names the limit */
    tg_buf_reset(&b);
    tg_buf_puts(&b, "{\"events\":[{\"event_name\":\"api\",\"payload\":{");
    for (int i = 0; i < 33; i++)
        tg_buf_printf(&b, "%s\"k%d\":\"v\"", i ? "," : "", i);
    tg_buf_puts(&b, "}}]}");
    assert_false(check(b.data)); /* more payload keys than the fast path keeps */
    tg_buf_free(&b);
    /* a NUL inside the body: declined at it, and the quotes before it put back */
    static const char nul[] = "{\"events\":[{\"event_name\":\"api\",\"payload\":{\"a\":\"x\0y\"}}]}";
    assert_false(check_body(nul, sizeof nul - 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_taken),
        cmocka_unit_test(test_declined),
        cmocka_unit_test(test_generated_bodies_are_taken),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_single_byte_changes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
