/* floorserver.c -- the smallest HTTP responder: the latency floor of this machine.
 *
 *   floorserver PORT
 *
 * Answers every request on 127.0.0.1:PORT with "200 {}" over keep-alive connections: one
 * thread, one epoll loop, level-triggered, each request read up to the blank line after its
 * headers and past its Content-Length. It does no parsing beyond that, no authentication and
 * no work of any kind, so its latency is what the kernel, the loopback device and the
 * scheduler cost on this machine. bench.sh sends it the same entitlement checks as Tollgate,
 * alone and beside Tollgate's ingest, as the baseline of the check latency rows, and the same
 * single events and month summaries, as the ceiling of those rows' ratios: no server on this
 * machine can answer faster than this one, under the same load.
 *
 * Written for loopback benchmarking only: it trusts its client and stops at the first error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct conn {
    int fd;
    size_t len;
    char buf[16384];
} conn;

static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             "Content-Length: 2\r\n\r\n{}";

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void conn_close(conn *c)
{
    close(c->fd);
    free(c);
}

/* Reads what the socket has and answers each complete request in it, in order. */
static void conn_readable(conn *c)
{
    ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len - 1);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r <= 0) {
        conn_close(c);
        return;
    }
    c->len += (size_t)r;
    c->buf[c->len] = '\0';
    char *end;
    while ((end = strstr(c->buf, "\r\n\r\n"))) {
        size_t used = (size_t)(end + 4 - c->buf);
        *end = '\0'; /* the body's length, from the head only */
        const char *cl = strcasestr(c->buf, "\r\ncontent-length:");
        used += cl ? strtoul(cl + 17, NULL, 10) : 0;
        *end = '\r';
        if (used > c->len)
            break; /* the rest of the body is still to come */
        if (write(c->fd, answer, sizeof answer - 1) != (ssize_t)(sizeof answer - 1)) {
            conn_close(c);
            return;
        }
        memmove(c->buf, c->buf + used, c->len - used + 1);
        c->len -= used;
    }
    if (c->len == sizeof c->buf - 1) /* a request larger than the buffer: not ours */
        conn_close(c);
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return fprintf(stderr, "usage: floorserver PORT\n"), 2;
    int one = 1, ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (ls < 0)
        die("socket");
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&addr, sizeof addr) || listen(ls, 512))
        die("bind");
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}; /* NULL: the listener */
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev))
        die("epoll");
    for (;;) {
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, -1);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr) {
                conn_readable(evs[i].data.ptr);
                continue;
            }
            int fd;
            while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                conn *c = calloc(1, sizeof *c);
                if (!c)
                    die("calloc");
                c->fd = fd;
                struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
                if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev))
                    die("epoll_ctl");
            }
        }
    }
}
