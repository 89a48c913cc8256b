#!/usr/bin/env bash
# Prints a test secret key the first time a data directory is served, so `make run` shows one.
set -euo pipefail
bin=$1 dir=$2
if [ ! -f "$dir/tollgate.db" ]; then
  key=$("$bin" keys create --data "$dir" | tail -n 1)
  echo "test secret key: $key"
  echo "(kept only hashed; create more with: $bin keys create --data $dir)"
fi
