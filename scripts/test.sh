#!/usr/bin/env bash
# Set up, then run the whole test suite (PostgreSQL included). Extra arguments go to pytest,
# e.g. `scripts/test.sh -m "not slow"` to skip the end-to-end tests that build the demo bundle.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# The store and API tests run against PostgreSQL too; start the local server when it is down.
export DEEPMINER_TEST_POSTGRES_URL=${DEEPMINER_TEST_POSTGRES_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test}
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
    if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
        echo "==> starting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
        for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
    fi
fi

exec .venv/bin/python -m pytest "$@"
