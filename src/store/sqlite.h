/* sqlite.h -- the embedded SQLite storage adapter (the default). */
#ifndef TG_STORE_SQLITE_H
#define TG_STORE_SQLITE_H

#include "core/store.h"

/* Opens (creating and migrating when needed) the database tollgate.db inside dir and returns
 * one connection. Free with s->ops->close(s). */
int tg_store_sqlite_open(const char *dir, tg_store **out, tg_err *err);

/* A factory that opens connections to dir (dir must outlive the factory). */
tg_store_factory tg_store_sqlite_factory(const char *dir);

#endif
