#!/usr/bin/env bash
# The layer rule: core/ never sees HTTP, JSON or SQL; base/ sees nothing of the domain.
set -u
fail=0
if grep -nE '#include *[<"](sqlite3|libpq-fe|jansson|microhttpd|curl/|http/|store/|cli/)' src/core/*.[ch]; then
  echo "check-layers: src/core includes an adapter header"; fail=1; fi
if grep -nE '#include *"(core|http|store|cli)/' src/base/*.[ch]; then
  echo "check-layers: src/base includes a higher layer"; fail=1; fi
exit $fail
