/* webhook_sender.h -- the thread that posts queued webhook deliveries (webhook_sender.c). */
#ifndef TG_HTTP_WEBHOOK_SENDER_H
#define TG_HTTP_WEBHOOK_SENDER_H

#include "base/err.h"
#include "core/service.h"

typedef struct tg_webhook_sender tg_webhook_sender;

int tg_webhook_sender_start(tg_service *svc, tg_webhook_sender **out, tg_err *err);
/* Stops it (a post in flight is abandoned: its lease brings it back). NULL is a no-op. */
void tg_webhook_sender_stop(tg_webhook_sender *s);

#endif
