/* test_http1.c -- unit tests for http/http1.h, the request framing of the HTTP transport.
 *
 * The head parser decides where a request ends, so its refusals (smuggling shapes: two
 * Content-Lengths, Transfer-Encoding beside Content-Length, unknown codings, folded lines)
 * are pinned one by one. The head finder and the chunked decoder are fed every split of their
 * input into two reads, since a socket may cut a request anywhere, and the result must not
 * depend on where. Random and mutated inputs must never crash or read out of bounds (the
 * suite also runs under ASan/UBSan with `make test SANITIZE=1`).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/http1.h"

/* Parses text as a complete head (copying it, since parsing writes into the buffer). */
static int parse(const char *text, tg_http1_head *h, char **copy)
{
    size_t n = strlen(text);
    *copy = malloc(n + 1);
    memcpy(*copy, text, n + 1);
    const char *why = NULL;
    int st = tg_http1_parse_head(*copy, n, h, &why);
    assert_non_null(why);
    return st;
}

static void test_head_fields(void **state)
{
    (void)state;
    tg_http1_head h;
    char *buf;
    assert_int_equal(parse("POST /v1/customers%2Fx?limit=3&a=%20b HTTP/1.1\r\nHost: h\r\n"
                           "Authorization:   Bearer sk_test_1  \r\n"
                           "Content-Length: 12\r\nExpect: 100-continue\r\n\r\n",
                           &h, &buf),
                     0);
    assert_string_equal(h.method, "POST");
    assert_string_equal(h.path, "/v1/customers/x"); /* the path is decoded, */
    assert_string_equal(h.query, "limit=3&a=%20b"); /* the query is left to the form decoder */
    assert_int_equal(h.minor, 1);
    assert_int_equal(h.nheaders, 4);
    assert_string_equal(tg_http1_header_value(&h, "authorization"), "Bearer sk_test_1");
    assert_null(tg_http1_header_value(&h, "Cookie"));
    assert_true(h.content_length == 12 && !h.chunked && h.keep_alive && h.expect_continue);
    free(buf);

    /* bare LF line ends, leading empty lines, HTTP/1.0 closes unless asked to keep alive */
    assert_int_equal(parse("\r\n\nGET /healthz HTTP/1.0\nX: 1\n\n", &h, &buf), 0);
    assert_string_equal(h.path, "/healthz");
    assert_string_equal(h.query, "");
    assert_false(h.keep_alive);
    free(buf);
    assert_int_equal(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &h, &buf), 0);
    assert_true(h.keep_alive);
    free(buf);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, close\r\n\r\n", &h, &buf), 0);
    assert_false(h.keep_alive);
    free(buf);
    /* absolute-form names the same path */
    assert_int_equal(parse("GET http://example.com/v1/meters?x=1 HTTP/1.1\r\nHost: h\r\n\r\n", &h, &buf), 0);
    assert_string_equal(h.path, "/v1/meters");
    assert_string_equal(h.query, "x=1");
    free(buf);
    assert_int_equal(parse("POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n", &h, &buf), 0);
    assert_true(h.chunked);
    free(buf);
    /* absolute-form without a path is "/", and a query stays a query */
    assert_int_equal(parse("GET http://localhost HTTP/1.1\r\nHost: h\r\n\r\n", &h, &buf), 0);
    assert_string_equal(h.path, "/");
    free(buf);
    assert_int_equal(parse("GET https://h?x=/y HTTP/1.1\r\nHost: h\r\n\r\n", &h, &buf), 0);
    assert_string_equal(h.path, "/");
    assert_string_equal(h.query, "x=/y");
    free(buf);
    /* HTTP/1.0: no 100 Continue, and a chunked body closes the connection after it */
    assert_int_equal(parse("POST /x HTTP/1.0\r\nConnection: keep-alive\r\nExpect: 100-continue\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n", &h, &buf), 0);
    assert_false(h.expect_continue);
    assert_false(h.keep_alive);
    free(buf);
}

static void test_head_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int status;
    } cases[] = {
        {"GET\r\n\r\n", 400},
        {"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"GET / HTTP/1.1 \r\n\r\n", 505},
        {"GET / HTTP/2.0\r\n\r\n", 505},
        {"GET / FTP/1.1\r\n\r\n", 400},
        {"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"GET relative HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"GET /a%zz HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"GET /a%00b HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"GET /a%4 HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: h\r\nNo colon\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\n folded\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: h\r\nA : 1\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r2\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
         400},
        {"GET / HTTP/1.1\r\nX: y\r\n\r\n", 400}, /* HTTP/1.1 without Host */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_http1_head h;
        char *buf;
        int st = parse(cases[i].text, &h, &buf);
        if (st != cases[i].status)
            fail_msg("%s -> %d, expected %d", cases[i].text, st, cases[i].status);
        free(buf);
    }
    /* a target over the limit is 414; more header lines than the table holds, 431 */
    char *big = malloc(TG_HTTP1_MAX_TARGET + 64);
    snprintf(big, TG_HTTP1_MAX_TARGET + 64, "GET /%0*d HTTP/1.1\r\nHost: h\r\n\r\n", TG_HTTP1_MAX_TARGET, 0);
    tg_http1_head h;
    char *buf;
    assert_int_equal(parse(big, &h, &buf), 414);
    free(buf);
    free(big);
    char many[4096] = "GET / HTTP/1.1\r\nHost: h\r\n";
    for (int i = 0; i <= TG_HTTP1_MAX_HEADERS; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "H%d: v\r\n", i);
    strcat(many, "\r\n");
    assert_int_equal(parse(many, &h, &buf), 431);
    free(buf);
    /* a NUL byte anywhere in a line, or a CR that ends none, refuses the head */
    static const char nul_head[] = "GET / HTTP/1.1\r\nHost: h\r\nA: x\0y\r\n\r\n";
    static const char cr_head[] = "GET / HTTP/1.1\r\nHost: h\r\nA: \r\r\n\r\n";
    const char *heads[] = {nul_head, cr_head};
    size_t lens[] = {sizeof nul_head - 1, sizeof cr_head - 1};
    for (size_t i = 0; i < 2; i++) {
        char copy[64];
        memcpy(copy, heads[i], lens[i]);
        const char *why = NULL;
        assert_int_equal(tg_http1_parse_head(copy, lens[i], &h, &why), 400);
    }
}

static void test_head_end_any_split(void **state)
{
    (void)state;
    const char *texts[] = {"GET / HTTP/1.1\r\nHost: h\r\nA: b\r\n\r\nNEXT", "GET / HTTP/1.1\nA: b\n\nNEXT",
                           "GET / HTTP/1.1\r\nHost: h\r\nA: b\n\r\nNEXT"};
    for (size_t t = 0; t < 3; t++) {
        const char *s = texts[t];
        size_t len = strlen(s), want = len - 4;
        for (size_t cut = 0; cut <= len; cut++) {
            size_t scanned = 0;
            size_t got = tg_http1_head_end(s, cut, &scanned);
            if (cut < want)
                assert_int_equal(got, 0);
            else
                assert_int_equal(got, want);
            if (!got)
                assert_int_equal(tg_http1_head_end(s, len, &scanned), want);
        }
    }
    size_t scanned = 0;
    assert_int_equal(tg_http1_head_end("GET / HTTP/1.1\r\nHost: h\r\nA: b\r\n", 23, &scanned), 0);
}

/* Decodes s fed in two parts cut at `cut`; returns the body, or NULL when refused. */
static char *dechunk(const char *s, size_t len, size_t cut, size_t *consumed, bool *done)
{
    tg_http1_chunked c = {0};
    tg_buf out;
    tg_buf_init(&out, 1 << 20);
    long a = tg_http1_chunked_decode(&c, s, cut, &out, done);
    if (a < 0 || (size_t)a != cut) {
        tg_buf_free(&out);
        return NULL;
    }
    long b = tg_http1_chunked_decode(&c, s + cut, len - cut, &out, done);
    if (b < 0) {
        tg_buf_free(&out);
        return NULL;
    }
    *consumed = (size_t)a + (size_t)b;
    char *r = strdup(out.data ? out.data : "");
    tg_buf_free(&out);
    return r;
}

static void test_chunked_any_split(void **state)
{
    (void)state;
    const char *s = "5\r\nhello\r\n1;ext=\"x\"\r\n \r\nA\n0123456789\n0\r\nTrailer: t\r\n\r\nNEXT";
    size_t len = strlen(s), body_end = len - 4;
    for (size_t cut = 0; cut <= body_end; cut++) {
        size_t used;
        bool done = false;
        char *body = dechunk(s, len, cut, &used, &done);
        assert_non_null(body);
        assert_string_equal(body, "hello 0123456789");
        assert_true(done);
        assert_int_equal(used, body_end); /* the next request's bytes are left alone */
        free(body);
    }
    /* an incomplete body is not done */
    tg_http1_chunked c = {0};
    bool done = true;
    assert_int_equal(tg_http1_chunked_decode(&c, "5\r\nhel", 6, NULL, &done), 6);
    assert_false(done);
}

static void test_chunked_refusals(void **state)
{
    (void)state;
    const char *bad[] = {
        "x\r\n",                     /* no size */
        "5\r\nhelloX\r\n",           /* data not followed by CRLF */
        "5\rX",                      /* CR without LF */
        "1000000000000000\r\n",      /* 16 hex digits */
        "5\x01\r\n",                 /* control byte in the size line */
        "0x5\r\nhello\r\n0\r\n\r\n",   /* not a size: "0" then garbage */
        "6 garbage\r\n",              /* only whitespace, then ';' or the line's end */
        "6;e=\x80\r\n",               /* a non-ASCII byte in an extension */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tg_http1_chunked c = {0};
        bool done;
        if (tg_http1_chunked_decode(&c, bad[i], strlen(bad[i]), NULL, &done) != -1)
            fail_msg("accepted %s", bad[i]);
    }
    /* trailers are bounded */
    size_t n = 40000;
    char *big = malloc(n + 8);
    memcpy(big, "0\r\n", 3);
    memset(big + 3, 'a', n);
    tg_http1_chunked c = {0};
    bool done;
    assert_int_equal(tg_http1_chunked_decode(&c, big, n + 3, NULL, &done), -1);
    free(big);
}

/* Random bytes and random mutations of valid requests: no crash, no out-of-bounds read, and
 * the head finder's answer never exceeds its input. */
static void test_random_inputs(void **state)
{
    (void)state;
    const char *seeds[] = {
        "POST /v1/billing/meter_events HTTP/1.1\r\nHost: h\r\nHost: h\r\nContent-Type: "
        "application/x-www-form-urlencoded\r\nContent-Length: 10\r\n\r\n",
        "GET /v1/customers?limit=3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "POST /v2/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
    };
    uint32_t x = 12345;
    char buf[512];
    for (int iter = 0; iter < 200000; iter++) {
        x = x * 1103515245u + 12345u;
        size_t len;
        if (iter % 4 == 0) {
            len = (x >> 8) % sizeof buf;
            for (size_t i = 0; i < len; i++) {
                x = x * 1103515245u + 12345u;
                buf[i] = "GET /\r\n: HTTP/1.1\t%0a"[(x >> 16) % 22];
            }
        } else {
            const char *s = seeds[iter % 3];
            len = strlen(s);
            memcpy(buf, s, len);
            for (int m = 0; m < 3; m++) {
                x = x * 1103515245u + 12345u;
                buf[(x >> 8) % len] = (char)(x >> 24);
            }
        }
        size_t scanned = 0;
        size_t end = tg_http1_head_end(buf, len, &scanned);
        assert_true(end <= len && scanned <= len);
        if (end) {
            char *copy = malloc(end + 1);
            memcpy(copy, buf, end);
            copy[end] = '\0';
            tg_http1_head h;
            const char *why;
            int st = tg_http1_parse_head(copy, end, &h, &why);
            assert_true(st == 0 || (st >= 400 && st <= 505));
            free(copy);
        }
        tg_http1_chunked c = {0};
        bool done;
        long used = tg_http1_chunked_decode(&c, buf, len, NULL, &done);
        assert_true(used >= -1 && used <= (long)len);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head_fields),        cmocka_unit_test(test_head_refusals),
        cmocka_unit_test(test_head_end_any_split), cmocka_unit_test(test_chunked_any_split),
        cmocka_unit_test(test_chunked_refusals),   cmocka_unit_test(test_random_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
