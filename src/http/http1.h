/* http1.h -- HTTP/1.1 request framing (RFC 9112): the request head, and chunked bodies.
 *
 * Pure functions over bytes, no sockets: the server (http/server.c) feeds them what it read.
 * A head is parsed in place in a buffer the caller owns (NULs are written into it), so the
 * method, path, query and header values point into that buffer and live as long as it does.
 * Parsing is strict where leniency would let two parsers disagree about where a request ends
 * (request smuggling): a Transfer-Encoding other than "chunked", a Content-Length beside it,
 * repeated or non-numeric Content-Lengths, and folded header lines are refused.
 */
#ifndef TG_HTTP1_H
#define TG_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

#define TG_HTTP1_MAX_HEAD (64u << 10) /* bytes of request line and headers */
#define TG_HTTP1_MAX_TARGET (8u << 10)
#define TG_HTTP1_MAX_HEADERS 64

typedef struct tg_http1_header {
    const char *name, *value; /* value without surrounding whitespace */
} tg_http1_header;

typedef struct tg_http1_head {
    const char *method;
    const char *path;  /* percent-decoded */
    const char *query; /* still form-encoded, "" when none */
    int minor;         /* HTTP/1.<minor> */
    tg_http1_header headers[TG_HTTP1_MAX_HEADERS];
    int nheaders;
    /* derived from the headers */
    bool chunked;
    uint64_t content_length; /* 0 when chunked or absent */
    bool keep_alive;
    bool expect_continue;
} tg_http1_head;

/* Looks for the blank line that ends a head in data[0..len), starting at *scanned (which it
 * advances, so a caller adding bytes does not rescan). Returns the head's length including the
 * blank line, or 0 when it is not complete yet. */
size_t tg_http1_head_end(const char *data, size_t len, size_t *scanned);

/* Parses a complete head buf[0..len) in place. Returns 0, or the HTTP status to refuse it
 * with (400, 414, 431, 501, 505) and a sentence in *why. */
int tg_http1_parse_head(char *buf, size_t len, tg_http1_head *h, const char **why);

/* The value of the first header named name (case-insensitive), or NULL. */
const char *tg_http1_header_value(const tg_http1_head *h, const char *name);

/* A chunked body decoder; zero-initialise it for each body. */
typedef struct tg_http1_chunked {
    int state;
    uint64_t left;     /* bytes of chunk data still to come */
    size_t line;       /* bytes of the current size or trailer line */
    size_t trailer;    /* bytes of trailers so far */
} tg_http1_chunked;

/* Decodes in[0..len): chunk data is appended to out (NULL: dropped). Returns the bytes
 * consumed, or -1 when the body is malformed. *done is set once the last chunk and the
 * trailers have been read; bytes after that are not consumed. */
long tg_http1_chunked_decode(tg_http1_chunked *c, const char *in, size_t len, tg_buf *out,
                             bool *done);

/* The reason phrase of a status ("OK", "Not Found"); "Unknown" when not in the table. */
const char *tg_http1_reason(int status);

#endif
