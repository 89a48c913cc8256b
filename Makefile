# Tollgate build. `make` builds build/tollgate; `make run` installs what is missing, builds and
# serves on the embedded SQLite default; `make test` installs, builds and runs every test.
# SANITIZE=1 builds everything under ASan/UBSan.

CC      ?= cc
STD     := -std=c11 -D_GNU_SOURCE
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wpointer-arith -Wvla -Wformat=2 -Wundef
OPT     ?= -O2 -g
PKGS    := jansson sqlite3 libcrypto libcurl
CFLAGS  += $(STD) $(WARN) $(OPT) -Isrc -pthread
LDLIBS  += -pthread
BUILD   := build
DATA    ?= ./data
LISTEN  ?= 127.0.0.1:12111

ifeq ($(SANITIZE),1)
  CFLAGS  += -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
  LDFLAGS += -fsanitize=address,undefined
  BUILD   := build-sanitize
endif

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

BASE_SRC  := $(wildcard src/base/*.c)
CORE_SRC  := $(wildcard src/core/*.c)
STORE_SRC := $(wildcard src/store/*.c)
HTTP_SRC  := $(wildcard src/http/*.c)
CLI_SRC   := $(wildcard src/cli/*.c)
LIB_SRC   := $(BASE_SRC) $(CORE_SRC) $(STORE_SRC) $(HTTP_SRC)
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ   := $(CLI_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all run test unit e2e deps check clean bench
all: $(BUILD)/tollgate

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libtollgate.a: $(LIB_OBJ)
	ar rcs $@ $^

$(BUILD)/tollgate: $(CLI_OBJ) $(BUILD)/libtollgate.a
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

# The examples: programs that use Tollgate over HTTP like a customer's system would.
$(BUILD)/voice-gateway: examples/voice-gateway/gateway.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $$(pkg-config --cflags libcurl jansson) $(LDFLAGS) -o $@ $< \
	    $$(pkg-config --libs libcurl jansson) $(LDLIBS)

# The in-process entitlement check benchmark (bench/checkbench.c), run by bench/bench.sh.
$(BUILD)/checkbench: bench/checkbench.c $(BUILD)/libtollgate.a
	$(CC) $(CFLAGS) $(PKG_CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libtollgate.a $(PKG_LIBS) $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libtollgate.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libtollgate.a \
	    $(PKG_LIBS) $$(pkg-config --libs cmocka) $(LDLIBS)

deps:
	@scripts/install-deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	@mkdir -p $(DATA)
	@scripts/first-key.sh $(BUILD)/tollgate $(DATA)
	exec $(BUILD)/tollgate serve --data $(DATA) --listen $(LISTEN)

check:
	@scripts/check-layers.sh

unit: $(UNIT_BIN)
	@fail=0; for t in $(UNIT_BIN); do echo "== $$t"; $$t || fail=1; done; exit $$fail

e2e: $(BUILD)/tollgate $(BUILD)/voice-gateway
	@cd tests/e2e && { [ -d node_modules/stripe ] || npm ci --no-audit --no-fund --silent; }
	TOLLGATE_BIN=$(CURDIR)/$(BUILD)/tollgate VOICE_GATEWAY_BIN=$(CURDIR)/$(BUILD)/voice-gateway \
	    node --test --test-concurrency=2 tests/e2e/

test: deps
	@$(MAKE) --no-print-directory check all unit
	@$(MAKE) --no-print-directory e2e

# Ingest and query benchmark against a PostgreSQL baseline (see BENCHMARKS.md); QUICK=1 is a
# smoke run of under a minute. Not part of `make test`.
# bash reads a script as it runs it: the benchmark runs from a copy, so that editing
# bench/bench.sh during a run cannot change the rest of that run.
bench: all
	@s=$$(mktemp) && cp bench/bench.sh $$s && BENCH_ROOT=$(CURDIR) QUICK=$(QUICK) bash $$s; \
	    rc=$$?; rm -f $$s; exit $$rc

clean:
	rm -rf build build-sanitize

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d)
