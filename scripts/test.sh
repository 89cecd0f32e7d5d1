#!/usr/bin/env bash
# Run the test suite. Installs what the tests need: the package (.venv), and where missing and possible (root with
# apt-get, e.g. in CI) Debian's chromium for the browser test and PostgreSQL 15 for the production-mode tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -x /usr/lib/postgresql/15/bin/initdb ] || command -v initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "test: installing ${need[*]} from Debian's packages"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null) \
    || echo "test: could not install ${need[*]}; the tests that need them will skip"
fi
exec .venv/bin/python -m pytest "$@"
