#!/usr/bin/env bash
# Installs the real components the test suite drives. Needs root and Debian's apt;
# elsewhere it says what is missing and the tests that need it skip (in CI they fail).
set -euo pipefail
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)  # the JS client libraries the tests drive
command -v openssl >/dev/null 2>&1 || need+=(openssl)  # self-signed certificates for TLS tests
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)  # RedisStore's tests (tests/redis_server.py)
command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || need+=(gcc)  # the compiled build (mypyc)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "missing system packages: ${need[*]} (install them to run every test)" >&2
fi
