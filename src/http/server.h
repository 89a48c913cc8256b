/* server.h -- the HTTP front door: HTTP/1.1 on epoll event loops (server.c). */
#ifndef TG_HTTP_SERVER_H
#define TG_HTTP_SERVER_H

#include "core/service.h"
#include "http/api.h"

typedef struct tg_server tg_server;

/* Starts serving on listen ("HOST:PORT", IPv4 or [IPv6]). cfg is copied. */
int tg_server_start(tg_server **out, tg_service *svc, const char *listen,
                    const tg_server_config *cfg, tg_err *err);

/* Whether listen is an address tg_server_start can parse (it may still fail to bind). */
bool tg_server_listen_valid(const char *listen);

/* Stops accepting, lets in-flight requests finish, and frees the server. NULL is a no-op. */
void tg_server_stop(tg_server *srv);

#endif
