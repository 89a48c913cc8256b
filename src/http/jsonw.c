/* jsonw.c -- streaming JSON writer (see jsonw.h). */
#include "http/jsonw.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

void jw_init(tg_jw *w, tg_buf *b)
{
    memset(w, 0, sizeof *w);
    w->b = b;
}

/* Writes the comma that separates this value from the previous one at this level. */
static void sep(tg_jw *w)
{
    if (w->comma[w->depth])
        tg_buf_append(w->b, ",", 1);
    w->comma[w->depth] = true;
}

static void open(tg_jw *w, char c)
{
    sep(w);
    tg_buf_append(w->b, &c, 1);
    if (w->depth + 1 < TG_JW_MAX_DEPTH)
        w->depth++;
    else
        w->b->failed = true;
    w->comma[w->depth] = false;
}

static void close_(tg_jw *w, char c)
{
    tg_buf_append(w->b, &c, 1);
    if (w->depth > 0)
        w->depth--;
}

void jw_obj(tg_jw *w) { open(w, '{'); }
void jw_end(tg_jw *w) { close_(w, '}'); }
void jw_arr(tg_jw *w) { open(w, '['); }
void jw_aend(tg_jw *w) { close_(w, ']'); }

/* The length of the well-formed UTF-8 sequence at p (lead byte >= 0x80), or 0 (RFC 3629:
 * no overlong forms, surrogates or code points past U+10FFFF). */
static size_t utf8_sequence(const unsigned char *p)
{
    unsigned char c = p[0];
    size_t n = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] > 0x9F) || (c == 0xF0 && p[1] < 0x90) ||
        (c == 0xF4 && p[1] > 0x8F))
        return 0;
    return n;
}

/* True for a byte written as it is: printable ASCII but the quote and the backslash. */
static bool plain(unsigned char c)
{
    return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

/* Bit 7 of each byte of v that is zero; exact as to whether there is one (a borrow can mark
 * a byte after a true one, which the byte loop below reads anyway). */
static uint64_t zero_bytes(uint64_t v)
{
    return (v - 0x0101010101010101u) & ~v & 0x8080808080808080u;
}

/* The length of s[0..len)'s longest prefix of plain bytes, eight bytes at a time while no
 * byte is below 0x20, has its high bit, or is a quote or a backslash; then a byte at a time.
 * Answers are mostly such strings: a summary list spent a seventh of its time here when the
 * whole scan went a byte at a time. */
static size_t plain_prefix(const char *s, size_t len)
{
    const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t x;
        memcpy(&x, s + i, 8);
        uint64_t below_space = (x - ones * 0x20) & ~x & high;
        if (below_space | (x & high) | zero_bytes(x ^ (ones * '"')) | zero_bytes(x ^ (ones * '\\')))
            break;
    }
    while (i < len && plain((unsigned char)s[i]))
        i++;
    return i;
}

/* Writes s as a JSON string. Bytes that are not well-formed UTF-8 (a path's percent escapes
 * can carry any) are written as U+FFFD, so the output is always valid JSON. Most strings
 * (keys, ids, names) need no escape: they are found so first and copied whole. */
static void write_string(tg_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t len = strlen(s), head = plain_prefix(s, len);
    tg_buf_append(b, "\"", 1);
    tg_buf_append(b, s, head);
    if (head == len) {
        tg_buf_append(b, "\"", 1);
        return;
    }
    s += head;
    const char *run = s;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c >= 0x80) {
            size_t n = utf8_sequence((const unsigned char *)p);
            if (n) {
                p += n - 1;
                continue;
            }
            tg_buf_append(b, run, (size_t)(p - run));
            tg_buf_puts(b, "\\ufffd");
            run = p + 1;
            continue;
        }
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        tg_buf_append(b, run, (size_t)(p - run));
        char esc[7] = {'\\', 0, 0, 0, 0, 0, 0};
        size_t n = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u', esc[2] = '0', esc[3] = '0', esc[4] = hex[c >> 4], esc[5] = hex[c & 15];
            n = 6;
        }
        tg_buf_append(b, esc, n);
        run = p + 1;
    }
    tg_buf_puts(b, run);
    tg_buf_append(b, "\"", 1);
}

void jw_key(tg_jw *w, const char *key)
{
    sep(w);
    write_string(w->b, key);
    tg_buf_append(w->b, ":", 1);
    w->comma[w->depth] = false; /* the value that follows takes no comma */
}

void jw_key_escaped(tg_jw *w, const char *text, size_t len)
{
    sep(w);
    tg_buf_append(w->b, "\"", 1);
    tg_buf_append(w->b, text, len);
    tg_buf_append(w->b, "\":", 2);
    w->comma[w->depth] = false;
}

/* After a key the value must not be preceded by a comma but must set it for the next key. */
void jw_str(tg_jw *w, const char *s)
{
    sep(w);
    if (s)
        write_string(w->b, s);
    else
        tg_buf_puts(w->b, "null");
}

void jw_int(tg_jw *w, int64_t v)
{
    sep(w);
    tg_buf_put_int(w->b, v);
}

void jw_bool(tg_jw *w, bool v)
{
    sep(w);
    tg_buf_puts(w->b, v ? "true" : "false");
}

void jw_null(tg_jw *w)
{
    sep(w);
    tg_buf_puts(w->b, "null");
}

void jw_raw(tg_jw *w, const char *text)
{
    sep(w);
    tg_buf_puts(w->b, text);
}

void jw_rawn(tg_jw *w, const char *text, size_t len)
{
    sep(w);
    tg_buf_append(w->b, text, len);
}

void jw_iso_time(tg_jw *w, int64_t t)
{
    struct tm tm;
    time_t tt = (time_t)t;
    char s[40];
    gmtime_r(&tt, &tm);
    strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%S.000Z", &tm);
    jw_str(w, s);
}

void jw_kstr(tg_jw *w, const char *key, const char *s)
{
    jw_key(w, key);
    jw_str(w, s);
}

void jw_kint(tg_jw *w, const char *key, int64_t v)
{
    jw_key(w, key);
    jw_int(w, v);
}

void jw_kbool(tg_jw *w, const char *key, bool v)
{
    jw_key(w, key);
    jw_bool(w, v);
}

void jw_knull(tg_jw *w, const char *key)
{
    jw_key(w, key);
    jw_null(w);
}

void jw_kint_or_null(tg_jw *w, const char *key, int64_t v)
{
    jw_key(w, key);
    if (v)
        jw_int(w, v);
    else
        jw_null(w);
}
