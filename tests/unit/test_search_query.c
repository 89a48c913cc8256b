/* test_search_query.c -- unit tests for core/search_query.h, Stripe's search query language.
 *
 * A toy resource (a name string, a status token, a created number and metadata) is enough to
 * pin each operator's meaning per type, null and negation, AND/OR, quoting and escapes, and
 * every refusal: the message says where the query went wrong.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/search_query.h"

typedef struct thing {
    const char *name, *status, *meta_key, *meta_value;
    int64_t created;
} thing;

enum { F_NAME, F_STATUS, F_CREATED, F_METADATA };
static const tg_search_field fields[] = {
    [F_NAME] = {"name", TG_SEARCH_STRING},
    [F_STATUS] = {"status", TG_SEARCH_TOKEN},
    [F_CREATED] = {"created", TG_SEARCH_NUMBER},
    [F_METADATA] = {"metadata", TG_SEARCH_TOKEN},
};

static void get(const void *obj, size_t field, const char *key, tg_search_value *v)
{
    const thing *t = obj;
    const char *s = NULL;
    switch (field) {
    case F_NAME: s = t->name; break;
    case F_STATUS: s = t->status; break;
    case F_CREATED:
        v->present = true;
        v->num = t->created;
        return;
    case F_METADATA: s = t->meta_key && strcmp(t->meta_key, key) == 0 ? t->meta_value : NULL; break;
    }
    v->present = s && *s;
    v->str = s;
}

static tg_arena arena;

static int setup(void **state)
{
    (void)state;
    tg_arena_init(&arena, 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tg_arena_free(&arena);
    return 0;
}

/* Whether query parses and matches t (the test fails when it does not parse). */
static bool matches(const char *query, const thing *t)
{
    tg_search_query q;
    tg_err err = {0};
    int rc = tg_search_parse(query, fields, sizeof fields / sizeof *fields, &arena, &q, &err);
    if (rc) {
        fail_msg("'%s' did not parse: %s", query, err.msg);
        return false;
    }
    return tg_search_match(&q, t, get);
}

/* The message of query's refusal (the test fails when it parses). */
static const char *refusal(const char *query)
{
    static tg_err err;
    tg_search_query q;
    memset(&err, 0, sizeof err);
    int rc = tg_search_parse(query, fields, sizeof fields / sizeof *fields, &arena, &q, &err);
    if (rc != TG_EINVAL) {
        fail_msg("'%s' was not refused (rc %d)", query, rc);
        return "";
    }
    assert_string_equal(err.param, "query");
    return err.msg;
}

static const thing amy = {"Amy  One two", "Active", "run", "R1", 1700000000};
static const thing bob = {"bob", "canceled", NULL, NULL, 1700000100};
static const thing nameless = {NULL, "active", "run", "r2", 1700000200};

static void test_strings_match_runs_of_whole_words(void **state)
{
    (void)state;
    assert_true(matches("name:\"one two\"", &amy));
    assert_true(matches("name:'AMY ONE'", &amy));
    assert_true(matches("name:\"amy one two\"", &amy));
    assert_false(matches("name:\"one tw\"", &amy));
    assert_false(matches("name:\"two one\"", &amy));
    assert_false(matches("name:\"amy two\"", &amy));
    assert_false(matches("name:\"one two three\"", &amy));
    assert_true(matches("name~\"ONE T\"", &amy));
    assert_true(matches("name~\"my  o\"", &amy));
    assert_false(matches("name~\"my o\"", &amy)); /* a substring, spaces and all */
    assert_false(matches("name:\"amy\"", &nameless));
}

static void test_tokens_numbers_and_metadata(void **state)
{
    (void)state;
    assert_true(matches("status:\"active\"", &amy));
    assert_false(matches("status:\"act\"", &amy));
    assert_true(matches("metadata[\"run\"]:\"r1\"", &amy));
    assert_true(matches("metadata['run']:'R1'", &amy));
    assert_false(matches("metadata[\"run\"]:\"r1\"", &nameless));
    assert_false(matches("metadata[\"other\"]:\"r1\"", &amy));
    assert_true(matches("created:1700000000", &amy));
    assert_true(matches("created:\"1700000000\"", &amy));
    assert_true(matches("created>1699999999", &amy));
    assert_false(matches("created>1700000000", &amy));
    assert_true(matches("created>=1700000000", &amy));
    assert_true(matches("created<1700000100", &amy));
    assert_false(matches("created<1700000100", &bob));
    assert_true(matches("created<=1700000100", &bob));
    assert_true(matches("created>-5", &bob));
}

static void test_null_negation_and_joining(void **state)
{
    (void)state;
    assert_true(matches("name:null", &nameless));
    assert_false(matches("name:NULL", &amy));
    assert_true(matches("-name:null", &amy));
    assert_true(matches("name:\"null\"", &(thing){"null", "x", NULL, NULL, 0}));
    assert_true(matches("-metadata[\"run\"]:null", &amy));
    assert_true(matches("metadata[\"run\"]:null", &bob));
    assert_true(matches("-status:\"canceled\"", &amy));
    assert_false(matches("-status:\"canceled\"", &bob));
    /* AND, a space, OR */
    assert_true(matches("status:\"active\" AND created<1700000001", &amy));
    assert_true(matches("status:\"active\"   created<1700000001", &amy));
    assert_false(matches("status:\"active\" and created>1700000001", &amy));
    assert_true(matches("status:\"canceled\" OR created<1700000001", &amy));
    assert_true(matches("status:\"canceled\" or created<1700000001", &bob));
    assert_false(matches("status:\"paused\" OR created<1", &amy));
    /* A word that is a keyword only between clauses. */
    assert_true(matches("name:\"and\" OR name:\"or\"", &(thing){"this or that", "", NULL, NULL, 0}));
    /* Escapes inside quotes. */
    assert_true(matches("name:\"say \\\"hi\\\"\"", &(thing){"say \"hi\"", "", NULL, NULL, 0}));
    assert_true(matches("name:'it\\'s'", &(thing){"it's", "", NULL, NULL, 0}));
    assert_true(matches("  status:\"active\"  ", &amy));
}

static void test_refusals_say_what_and_where(void **state)
{
    (void)state;
    assert_string_equal(refusal("colour:\"red\""),
                        "Invalid query at character 1: 'colour' is not a field that can be "
                        "searched here.");
    assert_non_null(strstr(refusal(""), "empty"));
    assert_non_null(strstr(refusal("   "), "empty"));
    assert_non_null(strstr(refusal("name>\"x\""), "':' or '~'"));
    assert_non_null(strstr(refusal("status~\"act\""), "only ':'"));
    assert_non_null(strstr(refusal("created~\"12\""), "not ~"));
    assert_non_null(strstr(refusal("name:amy"), "quoted"));
    assert_non_null(strstr(refusal("status:active"), "quoted"));
    assert_non_null(strstr(refusal("name:\"amy"), "not closed"));
    assert_non_null(strstr(refusal("created>abc"), "integer"));
    assert_non_null(strstr(refusal("created>1.5"), "integer"));
    assert_non_null(strstr(refusal("created>99999999999999999999"), "integer"));
    assert_non_null(strstr(refusal("name~\"am\""), "at least 3"));
    assert_non_null(strstr(refusal("name:\"\""), "empty"));
    assert_non_null(strstr(refusal("name:\"  \""), "empty"));
    assert_non_null(strstr(refusal(":\"x\""), "field name"));
    assert_non_null(strstr(refusal("name:"), "value"));
    assert_non_null(strstr(refusal("name \"x\""), "operator"));
    assert_non_null(strstr(refusal("name:\"x\"y"), "space after"));
    assert_non_null(strstr(refusal("metadata:\"x\""), "key"));
    assert_non_null(strstr(refusal("metadata[run]:\"x\""), "quoted key"));
    assert_non_null(strstr(refusal("metadata[\"\"]:\"x\""), "quoted key"));
    assert_non_null(strstr(refusal("name[\"x\"]:\"y\""), "only metadata"));
    assert_non_null(strstr(refusal("created>null"), "null takes only"));
    assert_non_null(strstr(refusal("name:\"a\" AND"), "ends with"));
    assert_non_null(strstr(refusal("name:\"a\" AND status:\"b\" OR created:1"), "combined"));
    assert_non_null(strstr(refusal("name:\"a\" status:\"b\" OR created:1"), "combined"));
    assert_string_equal(refusal("name:\"a\" name:\"x\" OR created:1"),
                        "Invalid query at character 19: AND and OR cannot be combined in one "
                        "query.");
}

static void test_at_most_ten_clauses(void **state)
{
    (void)state;
    char q[512] = "";
    for (int i = 0; i < 10; i++)
        strcat(q, i ? " AND created>0" : "created>0");
    assert_true(matches(q, &amy));
    strcat(q, " AND created>0");
    assert_non_null(strstr(refusal(q), "at most 10"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strings_match_runs_of_whole_words),
        cmocka_unit_test(test_tokens_numbers_and_metadata),
        cmocka_unit_test(test_null_negation_and_joining),
        cmocka_unit_test(test_refusals_say_what_and_where),
        cmocka_unit_test(test_at_most_ten_clauses),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
