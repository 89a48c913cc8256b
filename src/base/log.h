/* log.h -- one-line log records on stderr: ISO time, level, message. */
#ifndef TG_LOG_H
#define TG_LOG_H

enum { TG_LOG_DEBUG, TG_LOG_INFO, TG_LOG_WARN, TG_LOG_ERROR };

/* Minimum level printed; set once at start-up (TOLLGATE_LOG=debug|info|warn|error). */
void tg_log_set_level(int level);

void tg_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
