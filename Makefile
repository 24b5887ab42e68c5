# tollgate - a plain Makefile. `make` builds bin/tollgate; `make test` runs
# every test; `make run` starts the gateway on the embedded default.
# System packages come from scripts/deps.sh (idempotent), called first.

CC      ?= cc
PKGS    := libuv libcurl libcjson sqlite3 libcrypto libssl libnghttp2 zlib
LLHTTP  ?= /usr/share/llhttp
OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
WARN    := -Wall -Wextra -Wshadow -Wno-unused-parameter $(if $(CI),-Werror)
CPPFLAGS:= -std=c11 -D_GNU_SOURCE -Isrc -I/usr/share/include/llhttp
# Recursive (=): expanded only when a recipe runs, after `deps` installed the
# packages; pkg-config's own message names a missing one.
PKGCF    = $(shell pkg-config --cflags $(PKGS))
PKGLIBS  = $(shell pkg-config --libs $(PKGS))
LDLIBS  += $(PKGLIBS) -lpthread -lm

B       ?= build
BIN     ?= bin/tollgate
SRCS    := $(sort $(shell find src -name '*.c' ! -path 'src/cli/main.c'))
OBJS    := $(SRCS:%.c=$(B)/%.o)
LLOBJS  := $(B)/llhttp/api.o $(B)/llhttp/http.o $(B)/llhttp/llhttp.o
TESTS   := $(sort $(wildcard tests/unit/test_*.c))
TESTBIN := $(TESTS:tests/unit/%.c=$(B)/tests/%)
TOOLSRC := $(sort $(wildcard tests/tools/*.c))
TOOLS   := $(TOOLSRC:tests/tools/%.c=$(B)/tools/%)

.PHONY: all deps run test unit unit-asan e2e e2e-asan fuzz bench format clean
all: deps $(BIN)

deps:
	@bash scripts/deps.sh

$(BIN): $(B)/src/cli/main.o $(OBJS) $(LLOBJS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(PKGCF) $(CFLAGS) $(WARN) -MMD -MP -c -o $@ $<

# llhttp is built from the C sources Debian's node-llhttp ships.
$(B)/llhttp/%.o: $(LLHTTP)/%.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -w -c -o $@ $<

$(B)/tests/%: tests/unit/%.c $(OBJS) $(LLOBJS)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(PKGCF) $(CFLAGS) $(WARN) -Itests/unit -o $@ $^ $(LDLIBS) $(shell pkg-config --libs cmocka)

# Small programs the black-box tests drive (tests/tools/*.c).
$(B)/tools/%: tests/tools/%.c $(OBJS) $(LLOBJS)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(PKGCF) $(CFLAGS) $(WARN) -o $@ $^ $(LDLIBS)

unit: $(TESTBIN)
	@bash tests/unit/run.sh $(TESTBIN)

# The same unit tests, and the black-box tests against a gateway built the
# same way, under AddressSanitizer and UndefinedBehaviorSanitizer.
ASAN := B=build/asan OPT=-O1 BIN=build/asan/tollgate \
	  CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  LDFLAGS="-fsanitize=address,undefined"
unit-asan: deps
	@$(MAKE) --no-print-directory $(ASAN) unit

e2e-asan: deps
	@$(MAKE) --no-print-directory $(ASAN) build/asan/tollgate $(TOOLSRC:tests/tools/%.c=build/asan/tools/%)
	@TOLLGATE_BIN=build/asan/tollgate bash tests/e2e/run.sh

e2e: all $(TOOLS)
	@bash tests/e2e/run.sh

test: all $(TOOLS)
	@bash scripts/test.sh

# libFuzzer targets (clang only), built on their own: the decoder and core alone.
FUZZFLAGS := -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
fuzz: build/fuzz/fuzz_eventstream
build/fuzz/fuzz_eventstream: tests/fuzz/fuzz_eventstream.c src/aws/eventstream.c src/core/core.c \
		src/aws/eventstream.h src/core/core.h
	@mkdir -p $(@D)
	clang $(CPPFLAGS) $(FUZZFLAGS) $(WARN) -o $@ $(filter %.c,$^) $(shell pkg-config --libs zlib) -lpthread

run: all
	@bash scripts/quickstart.sh

bench: all
	@bash bench/run

format:
	clang-format -i $$(find src tests/unit tests/tools tests/fuzz bench -name '*.[ch]')

clean:
	rm -rf build bin

-include $(shell find $(B) -name '*.d' 2>/dev/null)
