/* http1.c -- HTTP/1.1 request framing: the head parser and the chunked body decoder.
 *
 * The head is parsed in one pass over a buffer that holds all of it (the server waits for the
 * blank line, up to TG_HTTP1_MAX_HEAD bytes), writing NULs where tokens end, so nothing is
 * copied and nothing is allocated. Lines may end in CRLF or a bare LF (RFC 9112 section 2.2
 * lets a recipient accept the latter). The chunked decoder is a small state machine fed
 * whatever bytes have arrived; it never needs more than one byte of look-ahead, so a body
 * split anywhere across reads decodes the same. Both are exercised with every split point and
 * with random bytes in tests/unit/test_http1.c.
 */
#include "http/http1.h"

#include <string.h>
#include <strings.h>

/* ---------------------------------------------------------------- head */

size_t tg_http1_head_end(const char *data, size_t len, size_t *scanned)
{
    /* A line feed followed by an optional CR and another line feed ends the head. */
    for (size_t i = *scanned; i < len; i++) {
        const char *nl = memchr(data + i, '\n', len - i);
        if (!nl)
            break;
        i = (size_t)(nl - data);
        size_t j = i + 1;
        if (j < len && data[j] == '\r')
            j++;
        if (j < len && data[j] == '\n')
            return j + 1;
        if (j >= len) {
            *scanned = i; /* the blank line may still come: look here again */
            return 0;
        }
    }
    *scanned = len;
    return 0;
}

/* RFC 9110 tchar: the characters of methods and header names. */
static bool is_tchar(unsigned char ch)
{
    if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'))
        return true;
    switch (ch) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+': case '-':
    case '.': case '^': case '_': case '`': case '|': case '~':
        return true;
    default:
        return false;
    }
}

/* Whether header name n is name (ASCII case-insensitive); the first letters decide most. */
static bool header_is(const char *n, const char *name)
{
    return (n[0] | 0x20) == (name[0] | 0x20) && strcasecmp(n, name) == 0;
}

static int hexval(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch |= 0x20;
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

/* Percent-decodes s in place; false on a bad escape or an encoded NUL. */
static bool percent_decode(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (*r != '%') {
            *w++ = *r;
            continue;
        }
        int hi = hexval((unsigned char)r[1]), lo = hi < 0 ? -1 : hexval((unsigned char)r[2]);
        if (lo < 0 || (hi == 0 && lo == 0))
            return false;
        *w++ = (char)(hi << 4 | lo);
        r += 2;
    }
    *w = '\0';
    return true;
}

/* Ends the line at p: returns the start of the next line (after LF), NUL-terminating the line
 * (its CR too). NULL when a CR stands alone or a NUL byte appears. */
static char *end_line(char *p, char *end)
{
    char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl)
        return NULL;
    size_t n = (size_t)(nl - p);
    const char *cr = memchr(p, '\r', n);
    if ((cr && cr != nl - 1) || memchr(p, '\0', n))
        return NULL;
    if (nl[-1] == '\r')
        nl[-1] = '\0';
    *nl = '\0';
    return nl + 1;
}

static bool has_token(const char *list, const char *token)
{
    size_t n = strlen(token);
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - p) == n && strncasecmp(p, token, n) == 0)
            return true;
        p = e;
    }
    return false;
}

static int parse_request_line(char *line, tg_http1_head *h, const char **why)
{
    char *p = line;
    h->method = p;
    while (is_tchar((unsigned char)*p))
        p++;
    if (p == line || *p != ' ' || p - line > 16)
        return *why = "Malformed request line.", 400;
    *p++ = '\0';
    char *target = p;
    while ((unsigned char)*p > ' ' && *p != 0x7f)
        p++;
    if (*p != ' ' || p == target)
        return *why = "Malformed request line.", 400;
    *p++ = '\0';
    if (p - target > (long)TG_HTTP1_MAX_TARGET)
        return *why = "The request URL is too long.", 414;
    if (strncmp(p, "HTTP/", 5) != 0)
        return *why = "Malformed request line.", 400;
    if (strcmp(p + 5, "1.1") == 0)
        h->minor = 1;
    else if (strcmp(p + 5, "1.0") == 0)
        h->minor = 0;
    else
        return *why = "Only HTTP/1.0 and HTTP/1.1 are served.", 505;
    /* absolute-form (a proxy's "http://host/path?q") names the same path; with no path it
     * is "/", written over the host's last byte (the buffer is ours, a literal is not) */
    if (strncasecmp(target, "http://", 7) == 0 || strncasecmp(target, "https://", 8) == 0) {
        char *authority = strstr(target, "//") + 2;
        size_t n = strcspn(authority, "/?");
        if (n == 0 || authority[n] != '/') {
            memmove(authority, authority + n, strlen(authority + n) + 1);
            authority[-1] = '/';
            target = authority - 1;
        } else {
            target = authority + n;
        }
    }
    if (*target != '/')
        return *why = "Malformed request URL.", 400;
    char *q = strchr(target, '?');
    h->query = "";
    if (q) {
        *q = '\0';
        h->query = q + 1;
    }
    if (!percent_decode(target))
        return *why = "Malformed request URL.", 400;
    h->path = target;
    return 0;
}

static int parse_header_line(char *line, tg_http1_head *h, const char **why)
{
    char *p = line;
    while (is_tchar((unsigned char)*p))
        p++;
    if (p == line || *p != ':')
        return *why = (*line == ' ' || *line == '\t') ? "Folded header lines are not accepted."
                                                       : "Malformed header line.",
               400;
    *p++ = '\0';
    while (*p == ' ' || *p == '\t')
        p++;
    char *e = p + strlen(p);
    while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
        *--e = '\0';
    for (char *c = p; c < e; c++)
        if ((unsigned char)*c < ' ' && *c != '\t')
            return *why = "Malformed header value.", 400;
    if (h->nheaders == TG_HTTP1_MAX_HEADERS)
        return *why = "Too many header lines.", 431;
    h->headers[h->nheaders++] = (tg_http1_header){line, p};
    return 0;
}

/* Content-Length, Transfer-Encoding, Connection and Expect decide how the request is read. */
static int derive_framing(tg_http1_head *h, const char **why)
{
    const char *cl = NULL, *te = NULL;
    h->keep_alive = h->minor == 1;
    for (int i = 0; i < h->nheaders; i++) {
        const char *n = h->headers[i].name, *v = h->headers[i].value;
        if (header_is(n, "Content-Length")) {
            if (cl)
                return *why = "More than one Content-Length header.", 400;
            cl = v;
        } else if (header_is(n, "Transfer-Encoding")) {
            if (te)
                return *why = "More than one Transfer-Encoding header.", 400;
            te = v;
        } else if (header_is(n, "Connection")) {
            if (has_token(v, "close"))
                h->keep_alive = false;
            else if (has_token(v, "keep-alive"))
                h->keep_alive = true;
        } else if (header_is(n, "Expect")) {
            h->expect_continue = strcasecmp(v, "100-continue") == 0;
        }
    }
    if (h->minor == 1 && !tg_http1_header_value(h, "Host"))
        return *why = "An HTTP/1.1 request must carry a Host header.", 400;
    if (h->minor == 0)
        h->expect_continue = false; /* 100 Continue is not HTTP/1.0 */
    if (te) {
        if (cl)
            return *why = "Content-Length and Transfer-Encoding together are not accepted.", 400;
        if (strcasecmp(te, "chunked") != 0)
            return *why = "Only the chunked transfer coding is accepted.", 501;
        h->chunked = true;
        if (h->minor == 0)
            h->keep_alive = false; /* RFC 9112 section 6.1: close after it */
    }
    if (cl) {
        if (!*cl || strlen(cl) > 18 || strspn(cl, "0123456789") != strlen(cl))
            return *why = "Invalid Content-Length.", 400;
        uint64_t v = 0;
        for (const char *c = cl; *c; c++)
            v = v * 10 + (uint64_t)(*c - '0');
        h->content_length = v;
    }
    return 0;
}

int tg_http1_parse_head(char *buf, size_t len, tg_http1_head *h, const char **why)
{
    memset(h, 0, sizeof *h);
    *why = "Malformed request.";
    if (len > TG_HTTP1_MAX_HEAD)
        return *why = "The request head is too large.", 431;
    char *end = buf + len, *p = buf;
    /* RFC 9112 section 2.2: empty lines before the request line are ignored */
    while (p < end && (*p == '\r' || *p == '\n'))
        p++;
    if (p == end)
        return 400;
    char *line = p;
    if (!(p = end_line(p + 1, end)))
        return 400;
    int rc = parse_request_line(line, h, why);
    if (rc)
        return rc;
    while (p < end) {
        line = p;
        if (*line == '\n' || (*line == '\r' && line + 1 < end && line[1] == '\n'))
            return derive_framing(h, why); /* the blank line */
        if (!(p = end_line(p + 1, end)))
            return *why = "Malformed header line.", 400;
        if ((rc = parse_header_line(line, h, why)))
            return rc;
    }
    return 400; /* no blank line: the caller passed an incomplete head */
}

const char *tg_http1_header_value(const tg_http1_head *h, const char *name)
{
    for (int i = 0; i < h->nheaders; i++)
        if (header_is(h->headers[i].name, name))
            return h->headers[i].value;
    return NULL;
}

/* ---------------------------------------------------------------- chunked bodies */

enum {
    CH_SIZE,     /* hex digits of a chunk size */
    CH_SIZE_WS,  /* whitespace after the size, before ';' or the line's end */
    CH_EXT,      /* a chunk extension (after ';'), up to the line's end */
    CH_SIZE_LF,  /* the LF after the size line's CR */
    CH_DATA,     /* chunk data */
    CH_DATA_CR,  /* the CRLF after chunk data */
    CH_DATA_LF,
    CH_TRAILER,  /* a trailer line (or the final empty line) */
    CH_DONE,
};

#define CH_MAX_LINE 4096     /* bytes of a size line with its extensions */
#define CH_MAX_TRAILER 16384 /* bytes of trailers, all lines */

long tg_http1_chunked_decode(tg_http1_chunked *c, const char *in, size_t len, tg_buf *out,
                             bool *done)
{
    size_t i = 0;
    while (i < len && c->state != CH_DONE) {
        unsigned char ch = (unsigned char)in[i];
        switch (c->state) {
        case CH_SIZE: {
            int v = hexval(ch);
            if (v >= 0) {
                if (c->line >= 15)
                    return -1; /* a chunk of 2^60 bytes is not a chunk */
                c->left = c->left << 4 | (uint64_t)v;
                c->line++;
                i++;
                break;
            }
            if (c->line == 0)
                return -1;
            c->state = CH_SIZE_WS;
            break;
        }
        case CH_SIZE_WS:
            /* only whitespace, then ';' and extensions or the line's end: "0x5" is no size */
            if (ch == ' ' || ch == '\t') {
                i++;
            } else if (ch == ';') {
                i++;
                c->state = CH_EXT;
            } else if (ch == '\r' || ch == '\n') {
                c->state = CH_EXT;
            } else {
                return -1;
            }
            break;
        case CH_EXT:
            i++;
            if (ch == '\n' || ch == '\r') {
                c->state = ch == '\r' ? CH_SIZE_LF : (c->left ? CH_DATA : CH_TRAILER);
                c->line = 0;
            } else if (++c->line > CH_MAX_LINE || (ch < ' ' && ch != '\t') || ch >= 0x7f) {
                return -1;
            }
            break;
        case CH_SIZE_LF:
            if (ch != '\n')
                return -1;
            i++;
            c->state = c->left ? CH_DATA : CH_TRAILER;
            break;
        case CH_DATA: {
            size_t n = len - i < c->left ? len - i : (size_t)c->left;
            if (out)
                tg_buf_append(out, in + i, n); /* the caller checks out->failed */
            i += n;
            c->left -= n;
            if (!c->left)
                c->state = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
            i++;
            if (ch == '\n')
                c->state = CH_SIZE;
            else if (ch == '\r')
                c->state = CH_DATA_LF;
            else
                return -1;
            break;
        case CH_DATA_LF:
            if (ch != '\n')
                return -1;
            i++;
            c->state = CH_SIZE;
            break;
        case CH_TRAILER:
            i++;
            if (++c->trailer > CH_MAX_TRAILER)
                return -1;
            if (ch == '\n') {
                if (c->line == 0)
                    c->state = CH_DONE; /* the empty line after the last chunk */
                c->line = 0;
            } else if (ch != '\r') {
                c->line++;
            }
            break;
        }
    }
    *done = c->state == CH_DONE;
    return (long)i;
}

/* ---------------------------------------------------------------- statuses */

const char *tg_http1_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    }
    return "Unknown";
}
