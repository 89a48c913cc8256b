/* test_jsonw.c -- unit tests for http/jsonw.h.
 *
 * Every response body is produced by this streaming writer, which tracks commas per nesting
 * level by hand and escapes strings itself. A misplaced comma or a raw control character makes
 * a response unparseable for Stripe's SDKs, so each case compares the output byte for byte with
 * the expected text and also checks that jansson parses it to an equal document.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "http/jsonw.h"

typedef void (*write_fn)(tg_jw *w);

/* Runs fn into a fresh buffer and checks the exact text and that it is valid JSON equal to
 * the expected document. */
static void check(write_fn fn, const char *want)
{
    tg_buf b;
    tg_buf_init(&b, 1 << 16);
    tg_jw w;
    jw_init(&w, &b);
    fn(&w);
    assert_false(b.failed);
    assert_non_null(b.data);
    if (strcmp(b.data, want) != 0)
        fail_msg("jsonw output\n  got  %s\n  want %s", b.data, want);
    assert_int_equal(b.len, strlen(want));
    assert_int_equal(w.depth, 0);

    json_error_t e1, e2;
    json_t *got = json_loads(b.data, JSON_DECODE_ANY, &e1);
    if (!got)
        fail_msg("jansson cannot parse %s: %s", b.data, e1.text);
    json_t *exp = json_loads(want, JSON_DECODE_ANY, &e2);
    assert_non_null(exp);
    assert_true(json_equal(got, exp));
    json_decref(got);
    json_decref(exp);
    tg_buf_free(&b);
}

static void w_empty_obj(tg_jw *w)
{
    jw_obj(w);
    jw_end(w);
}

static void w_empty_arr(tg_jw *w)
{
    jw_arr(w);
    jw_aend(w);
}

static void w_flat(tg_jw *w)
{
    jw_obj(w);
    jw_kstr(w, "id", "cus_1");
    jw_kstr(w, "object", "customer");
    jw_kint(w, "created", 1717243200);
    jw_kbool(w, "livemode", false);
    jw_knull(w, "email");
    jw_end(w);
}

static void w_nested(tg_jw *w)
{
    jw_obj(w);
    jw_kstr(w, "object", "list");
    jw_key(w, "data");
    jw_arr(w);
    jw_obj(w);
    jw_kint(w, "n", 1);
    jw_key(w, "inner");
    jw_obj(w);
    jw_end(w);
    jw_end(w);
    jw_obj(w);
    jw_end(w);
    jw_int(w, 3);
    jw_arr(w);
    jw_aend(w);
    jw_aend(w);
    jw_kbool(w, "has_more", true);
    jw_key(w, "meta");
    jw_obj(w);
    jw_key(w, "deep");
    jw_arr(w);
    jw_arr(w);
    jw_int(w, 1);
    jw_int(w, 2);
    jw_aend(w);
    jw_arr(w);
    jw_aend(w);
    jw_arr(w);
    jw_arr(w);
    jw_int(w, 3);
    jw_aend(w);
    jw_aend(w);
    jw_aend(w);
    jw_end(w);
    jw_kstr(w, "url", "/v1/customers");
    jw_end(w);
}

static void w_scalars_array(tg_jw *w)
{
    jw_arr(w);
    jw_str(w, NULL);
    jw_str(w, "");
    jw_null(w);
    jw_bool(w, true);
    jw_bool(w, false);
    jw_int(w, 0);
    jw_int(w, -1);
    jw_int(w, INT64_MAX);
    jw_int(w, INT64_MIN);
    jw_raw(w, "0.3");
    jw_raw(w, "-12");
    jw_raw(w, "170141183460469231731687303.715884105727");
    jw_aend(w);
}

static void w_raw_values(tg_jw *w)
{
    jw_obj(w);
    jw_key(w, "aggregated_value");
    jw_raw(w, "0.3");
    jw_key(w, "value");
    jw_raw(w, "5.000001");
    jw_kint_or_null(w, "deactivated_at", 0);
    jw_kint_or_null(w, "updated", 1717243200);
    jw_kint_or_null(w, "neg", -5);
    jw_end(w);
}

static void w_escapes(tg_jw *w)
{
    jw_obj(w);
    jw_kstr(w, "q", "say \"hi\"");
    jw_kstr(w, "bs", "C:\\dir\\");
    jw_kstr(w, "nl", "a\nb\r\tc");
    jw_kstr(w, "ctl", "\x01\x1f\x08\x0c");
    jw_kstr(w, "utf8", "\xC3\xA9t\xC3\xA9 \xF0\x9F\x98\x80 /</");
    jw_kstr(w, "key \"with\" quote\n", "v");
    jw_end(w);
}

static void w_iso_times(tg_jw *w)
{
    jw_arr(w);
    jw_iso_time(w, 0);
    jw_iso_time(w, 1717243200);
    jw_iso_time(w, 1717243199);
    jw_iso_time(w, -1);
    jw_iso_time(w, 951782400); /* 2000-02-29 */
    jw_aend(w);
}

static void w_obj_in_obj(tg_jw *w)
{
    jw_obj(w);
    jw_key(w, "a");
    jw_obj(w);
    jw_key(w, "b");
    jw_obj(w);
    jw_kint(w, "c", 1);
    jw_end(w);
    jw_kint(w, "d", 2);
    jw_end(w);
    jw_kint(w, "e", 3);
    jw_end(w);
}

static void test_structures(void **state)
{
    (void)state;
    const struct {
        write_fn fn;
        const char *want;
    } cases[] = {
        {w_empty_obj, "{}"},
        {w_empty_arr, "[]"},
        {w_flat,
         "{\"id\":\"cus_1\",\"object\":\"customer\",\"created\":1717243200,\"livemode\":false,"
         "\"email\":null}"},
        {w_nested,
         "{\"object\":\"list\",\"data\":[{\"n\":1,\"inner\":{}},{},3,[]],\"has_more\":true,"
         "\"meta\":{\"deep\":[[1,2],[],[[3]]]},\"url\":\"/v1/customers\"}"},
        {w_scalars_array,
         "[null,\"\",null,true,false,0,-1,9223372036854775807,-9223372036854775808,0.3,-12,"
         "170141183460469231731687303.715884105727]"},
        {w_raw_values,
         "{\"aggregated_value\":0.3,\"value\":5.000001,\"deactivated_at\":null,"
         "\"updated\":1717243200,\"neg\":-5}"},
        {w_obj_in_obj, "{\"a\":{\"b\":{\"c\":1},\"d\":2},\"e\":3}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check(cases[i].fn, cases[i].want);
}

static void test_escaping(void **state)
{
    (void)state;
    const char *want = "{\"q\":\"say \\\"hi\\\"\",\"bs\":\"C:\\\\dir\\\\\","
                       "\"nl\":\"a\\nb\\r\\tc\",\"ctl\":\"\\u0001\\u001f\\u0008\\u000c\","
                       "\"utf8\":\"\xC3\xA9t\xC3\xA9 \xF0\x9F\x98\x80 /</\","
                       "\"key \\\"with\\\" quote\\n\":\"v\"}";
    check(w_escapes, want);

    /* the decoded strings equal the originals */
    tg_buf b;
    tg_buf_init(&b, 1 << 16);
    tg_jw w;
    jw_init(&w, &b);
    w_escapes(&w);
    json_t *doc = json_loads(b.data, 0, NULL);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "q")), "say \"hi\"");
    assert_string_equal(json_string_value(json_object_get(doc, "bs")), "C:\\dir\\");
    assert_string_equal(json_string_value(json_object_get(doc, "nl")), "a\nb\r\tc");
    assert_string_equal(json_string_value(json_object_get(doc, "ctl")), "\x01\x1f\x08\x0c");
    assert_non_null(json_object_get(doc, "key \"with\" quote\n"));
    json_decref(doc);
    tg_buf_free(&b);
}

/* Bytes that are not well-formed UTF-8 come out as U+FFFD; well-formed text is unchanged. */
static void test_invalid_utf8_replaced(void **state)
{
    (void)state;
    const struct {
        const char *in, *want;
    } cases[] = {
        {"ok \xC3\xA9 \xF0\x9F\x98\x80", "\"ok \xC3\xA9 \xF0\x9F\x98\x80\""},
        {"\xFF\xFE", "\"\\ufffd\\ufffd\""},
        {"a\xC3", "\"a\\ufffd\""},                  /* truncated */
        {"\xC0\xAF", "\"\\ufffd\\ufffd\""},          /* overlong */
        {"\xED\xA0\x80", "\"\\ufffd\\ufffd\\ufffd\""}, /* a surrogate */
        {"\xF4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""}, /* past U+10FFFF */
        {"\xE2\x82\xAC\x80x", "\"\xE2\x82\xAC\\ufffdx\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_buf b;
        tg_buf_init(&b, 64);
        tg_jw w;
        jw_init(&w, &b);
        jw_str(&w, cases[i].in);
        assert_string_equal(b.data, cases[i].want);
        json_t *doc = json_loads(b.data, JSON_DECODE_ANY, NULL);
        assert_non_null(doc);
        json_decref(doc);
        tg_buf_free(&b);
    }
}

/* Every byte value at every offset of a string longer than the writer's eight-byte scan:
 * each is escaped as one byte alone would be, and the plain bytes around it are kept. */
static void test_every_byte_at_every_offset(void **state)
{
    (void)state;
    char want_byte[256][8];
    for (int c = 1; c < 256; c++) {
        const char *named = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n"
                          : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
        if (named)
            snprintf(want_byte[c], sizeof want_byte[c], "%s", named);
        else if (c < 0x20)
            snprintf(want_byte[c], sizeof want_byte[c], "\\u%04x", c);
        else if (c >= 0x80) /* a byte alone that high is never well-formed UTF-8 */
            snprintf(want_byte[c], sizeof want_byte[c], "\\ufffd");
        else
            snprintf(want_byte[c], sizeof want_byte[c], "%c", c);
    }
    for (int c = 1; c < 256; c++) {
        for (size_t at = 0; at < 19; at++) {
            char in[20], want[40];
            memset(in, 'a' + (int)(at % 26), sizeof in - 1);
            in[sizeof in - 1] = '\0';
            in[at] = (char)c;
            snprintf(want, sizeof want, "\"%.*s%s%s\"", (int)at, in, want_byte[c], in + at + 1);
            tg_buf b;
            tg_buf_init(&b, 64);
            tg_jw w;
            jw_init(&w, &b);
            jw_str(&w, in);
            assert_string_equal(b.data, want);
            tg_buf_free(&b);
        }
    }
}

/* Integers at every power of ten and either side of it, both signs, and the extremes, as
 * printf writes them. */
static void test_integers_as_printf_writes_them(void **state)
{
    (void)state;
    int64_t vals[64 * 2 + 2];
    size_t n = 0;
    int64_t p = 1;
    for (int k = 0; k <= 18; k++) {
        int64_t around[3] = {p - 1, p, p + 1};
        for (int j = 0; j < 3; j++) {
            vals[n++] = around[j];
            vals[n++] = -around[j];
        }
        if (k < 18) /* 10^18 is the last power of ten in 64 bits */
            p *= 10;
    }
    vals[n++] = INT64_MAX;
    vals[n++] = INT64_MIN;
    for (size_t i = 0; i < n; i++) {
        char want[32];
        snprintf(want, sizeof want, "%lld", (long long)vals[i]);
        tg_buf b;
        tg_buf_init(&b, 64);
        tg_jw w;
        jw_init(&w, &b);
        jw_int(&w, vals[i]);
        assert_string_equal(b.data, want);
        tg_buf_free(&b);
    }
}

static void test_iso_time(void **state)
{
    (void)state;
    check(w_iso_times, "[\"1970-01-01T00:00:00.000Z\",\"2024-06-01T12:00:00.000Z\","
                       "\"2024-06-01T11:59:59.000Z\",\"1969-12-31T23:59:59.000Z\","
                       "\"2000-02-29T00:00:00.000Z\"]");

    /* jw_iso_time(0) alone */
    tg_buf b;
    tg_buf_init(&b, 256);
    tg_jw w;
    jw_init(&w, &b);
    jw_iso_time(&w, 0);
    assert_string_equal(b.data, "\"1970-01-01T00:00:00.000Z\"");
    tg_buf_free(&b);
}

/* Output beyond the buffer's cap fails stickily instead of being truncated silently. */
static void test_cap_is_sticky(void **state)
{
    (void)state;
    tg_buf b;
    tg_buf_init(&b, 8);
    tg_jw w;
    jw_init(&w, &b);
    jw_obj(&w);
    jw_kstr(&w, "long_key", "a value that does not fit");
    assert_true(b.failed);
    jw_end(&w);
    assert_true(b.failed);
    assert_true(b.len <= 8);
    tg_buf_free(&b);
}

static void test_depth_overflow_fails(void **state)
{
    (void)state;
    tg_buf b;
    tg_buf_init(&b, 1 << 16);
    tg_jw w;
    jw_init(&w, &b);
    for (int i = 0; i < TG_JW_MAX_DEPTH - 1; i++)
        jw_arr(&w);
    assert_false(b.failed); /* 31 levels fit */
    jw_arr(&w);
    assert_true(b.failed);
    tg_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_structures),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_invalid_utf8_replaced),
        cmocka_unit_test(test_every_byte_at_every_offset),
        cmocka_unit_test(test_integers_as_printf_writes_them),
        cmocka_unit_test(test_iso_time),
        cmocka_unit_test(test_cap_is_sticky),
        cmocka_unit_test(test_depth_overflow_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
