/* test_params.c -- unit tests for http/params.h.
 *
 * Every request parameter reaches the handlers through this tree, whether it came as a
 * Stripe-style bracketed form body (/v1) or as JSON (/v2). The tests decode inputs into a
 * canonical text dump of the tree and compare it exactly, so bracket handling, array
 * ordering, percent-decoding and the refusal rules (bad escapes, invalid UTF-8, depth,
 * value/container conflicts) cannot drift. They also pin the "used" bookkeeping that makes
 * unknown parameters fail with their bracketed path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "base/buf.h"
#include "http/params.h"

/* ---------------------------------------------------------------- helpers */

/* Dumps p canonically: hash {k=v,...} in stored order, array [v,...] in stored order, string
 * "text" (JSON scalars as #text), unset string null. */
static void dump(const tg_param *p, char *out, size_t size, size_t *len)
{
#define PUT(...)                                                                              \
    do {                                                                                      \
        int n_ = snprintf(out + *len, size - *len, __VA_ARGS__);                              \
        if (n_ > 0)                                                                           \
            *len += (size_t)n_ < size - *len ? (size_t)n_ : size - *len - 1;                  \
    } while (0)
    switch (p->kind) {
    case TG_PARAM_STRING:
        if (!p->value)
            PUT("null");
        else if (p->is_json_scalar)
            PUT("#%s", p->value);
        else
            PUT("\"%s\"", p->value);
        break;
    case TG_PARAM_HASH:
    case TG_PARAM_ARRAY: {
        bool hash = p->kind == TG_PARAM_HASH;
        PUT("%c", hash ? '{' : '[');
        size_t count = 0;
        for (const tg_param *c = p->first; c; c = c->next) {
            if (count++)
                PUT(",");
            if (hash)
                PUT("%s=", c->key ? c->key : "(nokey)");
            dump(c, out, size, len);
        }
        PUT("%c", hash ? '}' : ']');
        /* the count field must agree with the list */
        if (count != p->count)
            PUT("!count=%zu", p->count);
        break;
    }
    }
#undef PUT
}

static const char *dump_root(const tg_param *root, char *out, size_t size)
{
    size_t len = 0;
    out[0] = '\0';
    dump(root, out, size, &len);
    return out;
}

/* Parses form text s; returns the rc and dumps the tree into out on success. */
static int form(const char *s, char *out, size_t size, tg_err *err)
{
    tg_arena a;
    tg_arena_init(&a, 0);
    tg_param *root = tg_params_new(&a);
    assert_non_null(root);
    int rc = tg_params_parse_form(root, s, strlen(s), &a, err);
    if (rc == TG_OK)
        dump_root(root, out, size);
    else
        snprintf(out, size, "(error %d)", rc);
    tg_arena_free(&a);
    return rc;
}

static int json(const char *s, char *out, size_t size, tg_err *err)
{
    tg_arena a;
    tg_arena_init(&a, 0);
    tg_param *root = tg_params_new(&a);
    assert_non_null(root);
    int rc = tg_params_parse_json(root, s, strlen(s), &a, err);
    if (rc == TG_OK)
        dump_root(root, out, size);
    else
        snprintf(out, size, "(error %d)", rc);
    tg_arena_free(&a);
    return rc;
}

/* ---------------------------------------------------------------- form decoding */

static void test_form_trees(void **state)
{
    (void)state;
    const struct {
        const char *in;
        const char *want;
    } cases[] = {
        {"a=1", "{a=\"1\"}"},
        {"a=1&b=2", "{a=\"1\",b=\"2\"}"},
        {"payload[value]=3", "{payload={value=\"3\"}}"},
        {"payload%5Bvalue%5D=3", "{payload={value=\"3\"}}"},
        {"payload%5bvalue%5d=3", "{payload={value=\"3\"}}"},
        {"payload[stripe_customer_id]=cus_1&payload[value]=3",
         "{payload={stripe_customer_id=\"cus_1\",value=\"3\"}}"},
        {"expand[]=a&expand[]=b", "{expand=[\"a\",\"b\"]}"},
        {"expand%5B%5D=a&expand%5B%5D=b", "{expand=[\"a\",\"b\"]}"},
        {"expand[0]=a&expand[1]=b", "{expand=[\"a\",\"b\"]}"},
        {"a[1]=y&a[0]=x", "{a=[\"x\",\"y\"]}"},
        {"a[2]=z&a[0]=x&a[1]=y", "{a=[\"x\",\"y\",\"z\"]}"},
        {"a[10]=ten&a[9]=nine", "{a=[\"nine\",\"ten\"]}"},
        {"items[0][price]=p&items[0][quantity]=2&items[1][price]=q",
         "{items=[{price=\"p\",quantity=\"2\"},{price=\"q\"}]}"},
        {"items[1][price]=q&items[0][price]=p", "{items=[{price=\"p\"},{price=\"q\"}]}"},
        {"items[][price]=p&items[][quantity]=2&items[][price]=q",
         "{items=[{price=\"p\",quantity=\"2\"},{price=\"q\"}]}"},
        {"a=hello+world", "{a=\"hello world\"}"},
        {"a=hello%20world%2B", "{a=\"hello world+\"}"},
        {"first+name=x", "{first name=\"x\"}"},
        {"description=", "{description=\"\"}"},
        {"flag", "{flag=\"\"}"},
        {"flag&b=1", "{flag=\"\",b=\"1\"}"},
        {"a=1&&b=2&", "{a=\"1\",b=\"2\"}"},
        {"", "{}"},
        {"a=x%3Dy%26z", "{a=\"x=y&z\"}"},
        {"a=b=c", "{a=\"b=c\"}"},
        {"name=%C3%A9t%C3%A9", "{name=\"\xC3\xA9t\xC3\xA9\"}"},
        {"a=%F0%9F%98%80", "{a=\"\xF0\x9F\x98\x80\"}"},
        {"long=abcdefghijklmn%F0%9F%98%80opqrstuvwxyz+2", "{long=\"abcdefghijklmn\xF0\x9F\x98\x80opqrstuvwxyz 2\"}"},
        {"a=1&a=2", "{a=\"2\"}"}, /* a repeated scalar: the last wins */
        {"m[a][b][c]=1&m[a][d]=2", "{m={a={b={c=\"1\"},d=\"2\"}}}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[1024];
        tg_err err = {0};
        int rc = form(cases[i].in, out, sizeof out, &err);
        if (rc != TG_OK)
            fail_msg("form \"%s\": rc %d (%s)", cases[i].in, rc, err.msg);
        if (strcmp(out, cases[i].want) != 0)
            fail_msg("form \"%s\":\n  got  %s\n  want %s", cases[i].in, out, cases[i].want);
    }
}

static void test_form_raw_and_encoded_brackets_same_tree(void **state)
{
    (void)state;
    char raw[512], enc[512];
    tg_err e1 = {0}, e2 = {0};
    assert_int_equal(form("payload[value]=3&payload[cust]=c", raw, sizeof raw, &e1), TG_OK);
    assert_int_equal(form("payload%5Bvalue%5D=3&payload%5Bcust%5D=c", enc, sizeof enc, &e2),
                     TG_OK);
    assert_string_equal(raw, enc);
    assert_string_equal(raw, "{payload={value=\"3\",cust=\"c\"}}");
}

static void test_form_refusals(void **state)
{
    (void)state;
    const struct {
        const char *in;
        int code;
    } cases[] = {
        {"a=%zz", TG_EMALFORMED},
        {"a=%4", TG_EMALFORMED},
        {"a=%", TG_EMALFORMED},
        {"a=%g1", TG_EMALFORMED},
        {"a%zz=1", TG_EMALFORMED},
        {"a=%ff", TG_EMALFORMED},          /* invalid UTF-8 */
        {"a=%C3", TG_EMALFORMED},          /* truncated sequence */
        {"a=%C0%AF", TG_EMALFORMED},       /* overlong encoding */
        {"a=%ED%A0%80", TG_EMALFORMED},    /* UTF-16 surrogate */
        /* after runs of ASCII that the check skips eight bytes at a time */
        {"a=abcdefgh%ff", TG_EMALFORMED},
        {"a=abcdefghijklmno%ff", TG_EMALFORMED},
        {"a=abcdefghijklmnop%C3", TG_EMALFORMED},
        {"a=abcdefg%C3%A9abcdefgh%ED%A0%80", TG_EMALFORMED},
        {"abcdefghijklmnop%ff=1", TG_EMALFORMED},
        {"a=abcdefghijklmnop%00", TG_EMALFORMED},
        {"a=x%00y", TG_EMALFORMED},        /* NUL inside a value */
        {"a=1&a[b]=2", TG_EMALFORMED},     /* value, then hash */
        {"a[b]=2&a=1", TG_EMALFORMED},     /* hash, then value */
        {"a[]=1&a[b]=2", TG_EMALFORMED},   /* array, then hash */
        {"a[b]=1&a[]=2", TG_EMALFORMED},   /* hash, then array */
        {"a[0]=1&a[0][x]=2", TG_EMALFORMED},
        {"=1", TG_EMALFORMED},             /* empty name */
        {"[a]=1", TG_EMALFORMED},
        {"a[b=1", TG_EMALFORMED},          /* unclosed bracket */
        {"a[b]c=1", TG_EMALFORMED},        /* junk after a bracket */
        {"a[1][2][3][4][5][6][7][8][9]=x", TG_EMALFORMED}, /* 9 levels below the name */
        {"a[b][c][d][e][f][g][h][i][j][k]=x", TG_EMALFORMED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[512];
        tg_err err = {0};
        int rc = form(cases[i].in, out, sizeof out, &err);
        if (rc != cases[i].code)
            fail_msg("form \"%s\": rc %d, want %d (tree %s)", cases[i].in, rc, cases[i].code,
                     out);
        assert_int_equal(err.code, cases[i].code);
        assert_true(err.msg[0] != '\0');
    }
}

static void test_form_depth_limit(void **state)
{
    (void)state;
    char out[512];
    tg_err err = {0};
    /* 8 levels (the name and 7 brackets) is the deepest accepted, as for JSON. */
    assert_int_equal(form("a[b][c][d][e][f][g][h]=x", out, sizeof out, &err), TG_OK);
    assert_string_equal(out, "{a={b={c={d={e={f={g={h=\"x\"}}}}}}}}");
    tg_err err2 = {0};
    assert_int_equal(form("a[b][c][d][e][f][g][h][i]=x", out, sizeof out, &err2),
                     TG_EMALFORMED);
}

static void test_add_pair(void **state)
{
    (void)state;
    tg_arena a;
    tg_arena_init(&a, 0);
    tg_param *root = tg_params_new(&a);
    tg_err err = {0};
    assert_int_equal(tg_params_add_pair(root, "expand[1]", "b", &a, &err), TG_OK);
    assert_int_equal(tg_params_add_pair(root, "expand[0]", "a", &a, &err), TG_OK);
    assert_int_equal(tg_params_add_pair(root, "limit", "3", &a, &err), TG_OK);
    char out[256];
    assert_string_equal(dump_root(root, out, sizeof out), "{expand=[\"a\",\"b\"],limit=\"3\"}");
    /* already-decoded pairs are not decoded again */
    assert_int_equal(tg_params_add_pair(root, "q", "100%25+x", &a, &err), TG_OK);
    assert_string_equal(tg_param_get(root, "q")->value, "100%25+x");
    tg_err err2 = {0};
    assert_int_equal(tg_params_add_pair(root, "bad", "\xff", &a, &err2), TG_EMALFORMED);
    tg_err err3 = {0};
    assert_int_equal(tg_params_add_pair(root, "limit[x]", "1", &a, &err3), TG_EMALFORMED);
    tg_arena_free(&a);
}

/* ---------------------------------------------------------------- JSON decoding */

static void test_json_trees(void **state)
{
    (void)state;
    const struct {
        const char *in;
        const char *want;
    } cases[] = {
        {"{}", "{}"},
        {"{\"a\":\"x\"}", "{a=\"x\"}"},
        {"{\"payload\":{\"value\":\"3\",\"cust\":\"cus_1\"}}",
         "{payload={value=\"3\",cust=\"cus_1\"}}"},
        {"{\"n\":42,\"neg\":-7,\"big\":9007199254740993}", "{n=#42,neg=#-7,big=#9007199254740993}"},
        {"{\"t\":true,\"f\":false}", "{t=#true,f=#false}"},
        {"{\"z\":null}", "{z=null}"},
        {"{\"s\":\"\"}", "{s=\"\"}"},
        {"{\"arr\":[\"a\",1,null,{\"k\":\"v\"},[]]}", "{arr=[\"a\",#1,null,{k=\"v\"},[]]}"},
        {"{\"u\":\"\\u00e9\\n\"}", "{u=\"\xC3\xA9\n\"}"},
        {" \n{\"a\" : \"b\"}\n ", "{a=\"b\"}"},
        /* strings scanned eight bytes at a time: ends and escapes at every offset around a
         * word, and multi-byte UTF-8 inside words */
        {"{\"abcdefg\":\"01234567\"}", "{abcdefg=\"01234567\"}"},
        {"{\"k\":\"0123456789abcdef\"}", "{k=\"0123456789abcdef\"}"},
        {"{\"k\":\"01234567\\\"x\"}", "{k=\"01234567\"x\"}"},
        {"{\"k\":\"0123456\\\\x\"}", "{k=\"0123456\\x\"}"},
        {"{\"k\":\"012345678\\n\"}", "{k=\"012345678\n\"}"},
        {"{\"k\":\"d\xC3\xA9j\xC3\xA0 vu, \xE2\x82\xAC 12345678\"}",
         "{k=\"d\xC3\xA9j\xC3\xA0 vu, \xE2\x82\xAC 12345678\"}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[1024];
        tg_err err = {0};
        int rc = json(cases[i].in, out, sizeof out, &err);
        if (rc != TG_OK)
            fail_msg("json %s: rc %d (%s)", cases[i].in, rc, err.msg);
        if (strcmp(out, cases[i].want) != 0)
            fail_msg("json %s:\n  got  %s\n  want %s", cases[i].in, out, cases[i].want);
    }
}

static void test_json_array_indexes(void **state)
{
    (void)state;
    tg_arena a;
    tg_arena_init(&a, 0);
    tg_param *root = tg_params_new(&a);
    tg_err err = {0};
    const char *s = "{\"arr\":[\"a\",\"b\",\"c\"]}";
    assert_int_equal(tg_params_parse_json(root, s, strlen(s), &a, &err), TG_OK);
    tg_param *arr = tg_param_get(root, "arr");
    assert_non_null(arr);
    assert_int_equal(arr->kind, TG_PARAM_ARRAY);
    assert_int_equal(arr->count, 3);
    long i = 0;
    for (tg_param *c = arr->first; c; c = c->next, i++) {
        assert_int_equal(c->index, i);
        assert_null(c->key);
    }
    tg_arena_free(&a);
}

static void test_json_refusals(void **state)
{
    (void)state;
    const struct {
        const char *in;
        int code;
    } cases[] = {
        {"{\"a\":1.5}", TG_EINVAL},
        {"{\"a\":1e5}", TG_EINVAL},
        {"{\"a\":{\"b\":[0.25]}}", TG_EINVAL},
        {"[1,2]", TG_EMALFORMED},
        {"\"str\"", TG_EMALFORMED},
        {"42", TG_EMALFORMED},
        {"null", TG_EMALFORMED},
        {"", TG_EMALFORMED},
        {"{", TG_EMALFORMED},
        {"{\"a\":}", TG_EMALFORMED},
        {"{a:1}", TG_EMALFORMED},
        {"{\"a\":\"x\",}", TG_EMALFORMED},
        {"{\"a\":1}{}", TG_EMALFORMED},
        {"{\"a\":1,\"a\":2}", TG_EMALFORMED},       /* duplicate key */
        {"{\"a\":\"\\u0000\"}", TG_EMALFORMED},      /* NUL in a string */
        {"{\"a\":\"\xff\"}", TG_EMALFORMED},         /* invalid UTF-8 */
        {"{\"a\":\"01234567\x01\"}", TG_EMALFORMED},   /* control characters, in and */
        {"{\"a\":\"0123456\x1f" "89abcdef\"}", TG_EMALFORMED}, /* after the words skipped */
        {"{\"a\":\"0123456789abcdef\n\"}", TG_EMALFORMED},
        {"{\"a\":\"0123\xff" "4567abcdefgh\"}", TG_EMALFORMED}, /* invalid UTF-8 in a word */
        {"{\"a\":\"01234567\xC3\"}", TG_EMALFORMED},
        {"{\"a\":\"0123456789abcdef", TG_EMALFORMED},    /* unterminated */
        {"{\"a\":\"0123456789abcdef\\", TG_EMALFORMED},
        /* 9 nested containers below the top-level object */
        {"{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":{\"h\":{\"i\":\"x\"}}}}}}}}}",
         TG_EMALFORMED},
        {"{\"a\":[[[[[[[[[1]]]]]]]]]}", TG_EMALFORMED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[512];
        tg_err err = {0};
        int rc = json(cases[i].in, out, sizeof out, &err);
        if (rc != cases[i].code)
            fail_msg("json %s: rc %d, want %d (tree %s)", cases[i].in, rc, cases[i].code, out);
        assert_int_equal(err.code, cases[i].code);
    }
}

/* Large objects are checked for duplicate keys once they are complete (by sorting): a
 * duplicate anywhere in them is refused, their absence accepted, order kept. */
static void test_json_large_objects(void **state)
{
    (void)state;
    const size_t sizes[] = {15, 16, 17, 40, 5000};
    for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
        size_t n = sizes[z];
        for (size_t dup_at = 0; dup_at <= n; dup_at += n / 3 + 1) {
            /* keys k0..k(n-1) in a shuffled order; with dup_at < n, one more key repeats k(dup_at) */
            tg_buf b;
            tg_buf_init(&b, 16 * n);
            tg_buf_append(&b, "{", 1);
            for (size_t i = 0; i < n; i++)
                tg_buf_printf(&b, "%s\"k%zu\":%zu", i ? "," : "", (i * 7919) % n, i);
            bool dup = dup_at < n && n > 1;
            if (dup)
                tg_buf_printf(&b, ",\"k%zu\":0", dup_at);
            tg_buf_append(&b, "}", 2);
            tg_arena a;
            tg_arena_init(&a, 0);
            tg_param *root = tg_params_new(&a);
            tg_err err = {0};
            int rc = tg_params_parse_json(root, b.data, b.len - 1, &a, &err);
            if (rc != (dup ? TG_EMALFORMED : TG_OK))
                fail_msg("%zu keys, duplicate %d at %zu: rc %d (%s)", n, dup, dup_at, rc,
                         err.msg);
            if (!dup) {
                assert_int_equal(root->count, n);
                char last[32];
                snprintf(last, sizeof last, "k%zu", ((n - 1) * 7919) % n);
                assert_string_equal(root->first->key, "k0");
                assert_string_equal(root->last->key, last);
            }
            tg_arena_free(&a);
            tg_buf_free(&b);
        }
    }
}

/* A hash or array in a form body takes at most TG_PARAMS_MAX_CHILDREN entries, whichever way
 * they are written. */
static void test_form_children_limit(void **state)
{
    (void)state;
    const char *shapes[] = {"k", "m[k]", "a[N]", "a[]", "a[][k]"};
    for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++)
        for (int n = TG_PARAMS_MAX_CHILDREN; n <= TG_PARAMS_MAX_CHILDREN + 1; n++) {
            tg_buf b;
            tg_buf_init(&b, 16 * (size_t)n);
            for (int i = 0; i < n; i++) {
                const char *sep = i ? "&" : "";
                switch (sh) {
                case 0: tg_buf_printf(&b, "%sk%d=1", sep, i); break;
                case 1: tg_buf_printf(&b, "%sm[k%d]=1", sep, i); break;
                case 2: tg_buf_printf(&b, "%sa[%d]=1", sep, i); break;
                case 3: tg_buf_printf(&b, "%sa[]=%d", sep, i); break;
                default: tg_buf_printf(&b, "%sa[][k%d]=1", sep, i); break;
                }
            }
            tg_buf_append(&b, "", 1);
            char out[64];
            tg_err err = {0};
            int rc = form(b.data, out, sizeof out, &err);
            int want = n > TG_PARAMS_MAX_CHILDREN ? TG_EMALFORMED : TG_OK;
            if (rc != want)
                fail_msg("%s x %d: rc %d, want %d (%s)", shapes[sh], n, rc, want, err.msg);
            tg_buf_free(&b);
        }
}

static void test_json_depth_limit(void **state)
{
    (void)state;
    char out[512];
    tg_err err = {0};
    /* A leaf inside 8 objects (the body and 7 nested ones) is accepted. */
    assert_int_equal(
        json("{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":{\"h\":\"x\"}}}}}}}}", out,
             sizeof out, &err),
        TG_OK);
    assert_string_equal(out, "{a={b={c={d={e={f={g={h=\"x\"}}}}}}}}");
}

/* ---------------------------------------------------------------- used / unused */

static void test_get_marks_used(void **state)
{
    (void)state;
    tg_arena a;
    tg_arena_init(&a, 0);
    tg_param *root = tg_params_new(&a);
    tg_err err = {0};
    const char *s = "event_name=api&payload[value]=3&payload[stripe_customer_id]=cus_1";
    assert_int_equal(tg_params_parse_form(root, s, strlen(s), &a, &err), TG_OK);

    char path[160];
    assert_true(tg_params_first_unused(root, path, sizeof path));
    assert_string_equal(path, "event_name");

    tg_param *ev = tg_param_get(root, "event_name");
    assert_non_null(ev);
    assert_true(ev->used);
    assert_string_equal(ev->value, "api");
    assert_null(tg_param_get(root, "missing"));
    assert_null(tg_param_get(NULL, "x"));
    assert_null(tg_param_get(ev, "x")); /* not a hash */

    assert_true(tg_params_first_unused(root, path, sizeof path));
    assert_string_equal(path, "payload");

    tg_param *payload = tg_param_get(root, "payload");
    assert_true(tg_params_first_unused(root, path, sizeof path));
    assert_string_equal(path, "payload[value]");
    assert_string_equal(tg_param_get(payload, "value")->value, "3");
    assert_true(tg_params_first_unused(root, path, sizeof path));
    assert_string_equal(path, "payload[stripe_customer_id]");
    assert_non_null(tg_param_get(payload, "stripe_customer_id"));
    assert_false(tg_params_first_unused(root, path, sizeof path));
    assert_string_equal(path, "");
    tg_arena_free(&a);
}

static void test_first_unused_paths(void **state)
{
    (void)state;
    tg_arena a;
    tg_arena_init(&a, 0);
    tg_param *root = tg_params_new(&a);
    tg_err err = {0};
    const char *s = "payload[value]=3&payload[extra]=x&"
                    "items[0][price]=p&items[0][quantity]=2&items[1][price]=q";
    assert_int_equal(tg_params_parse_form(root, s, strlen(s), &a, &err), TG_OK);

    char path[160];
    tg_param *payload = tg_param_get(root, "payload");
    tg_param_get(payload, "value");
    assert_true(tg_params_first_unused(root, path, sizeof path));
    assert_string_equal(path, "payload[extra]");
    tg_param_get(payload, "extra");

    tg_param *items = tg_param_get(root, "items");
    assert_non_null(items);
    assert_true(tg_params_first_unused(root, path, sizeof path));
    assert_string_equal(path, "items[0]");
    tg_param *item0 = items->first, *item1 = item0->next;
    item0->used = true;
    assert_true(tg_params_first_unused(root, path, sizeof path));
    assert_string_equal(path, "items[0][price]");
    tg_param_get(item0, "price");
    tg_param_get(item0, "quantity");
    item1->used = true;
    assert_true(tg_params_first_unused(root, path, sizeof path));
    assert_string_equal(path, "items[1][price]");
    tg_param_use_all(items);
    assert_false(tg_params_first_unused(root, path, sizeof path));

    /* a small buffer truncates but still terminates */
    tg_param *root2 = tg_params_new(&a);
    const char *s2 = "averyveryverylongparametername[inner]=1";
    assert_int_equal(tg_params_parse_form(root2, s2, strlen(s2), &a, &err), TG_OK);
    tg_param_get(root2, "averyveryverylongparametername");
    char small[8];
    assert_true(tg_params_first_unused(root2, small, sizeof small));
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_memory_equal(small, "averyve", 8);
    tg_arena_free(&a);
}

static void test_json_unused_paths(void **state)
{
    (void)state;
    tg_arena a;
    tg_arena_init(&a, 0);
    tg_param *root = tg_params_new(&a);
    tg_err err = {0};
    const char *s = "{\"payload\":{\"value\":\"1\"},\"list\":[{\"k\":\"v\"}]}";
    assert_int_equal(tg_params_parse_json(root, s, strlen(s), &a, &err), TG_OK);
    tg_param_use_all(tg_param_get(root, "payload"));
    tg_param *list = tg_param_get(root, "list");
    list->first->used = true;
    char path[160];
    assert_true(tg_params_first_unused(root, path, sizeof path));
    assert_string_equal(path, "list[0][k]");
    tg_arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_form_trees),
        cmocka_unit_test(test_form_raw_and_encoded_brackets_same_tree),
        cmocka_unit_test(test_form_refusals),
        cmocka_unit_test(test_form_depth_limit),
        cmocka_unit_test(test_add_pair),
        cmocka_unit_test(test_json_trees),
        cmocka_unit_test(test_json_array_indexes),
        cmocka_unit_test(test_json_refusals),
        cmocka_unit_test(test_json_large_objects),
        cmocka_unit_test(test_form_children_limit),
        cmocka_unit_test(test_json_depth_limit),
        cmocka_unit_test(test_get_marks_used),
        cmocka_unit_test(test_first_unused_paths),
        cmocka_unit_test(test_json_unused_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
