#!/usr/bin/env bash
# Set up, then run the whole test suite (PostgreSQL included). Extra arguments go to pytest,
# e.g. `scripts/test.sh -m "not slow"` to skip the end-to-end tests that build the demo bundle.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=all,deploy-test,bench bash scripts/setup.sh

# Debian tools the tests drive for real: promtool (from the prometheus package).
if ! command -v promtool >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing Debian packages for the tests: prometheus (promtool)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# The browser tests (tests/web): Debian's Chromium, driven by Playwright (never `playwright install`).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing Debian packages for the tests: chromium"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

# The PACS tests (tests/pacs): dciodvfy validates the DICOM results; Orthanc with its DICOMweb plugin is the real PACS.
if { ! command -v dciodvfy >/dev/null || ! command -v Orthanc >/dev/null || ! command -v ip >/dev/null \
    || ! dpkg -s orthanc-dicomweb >/dev/null 2>&1; } \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing Debian packages for the tests: dicom3tools (dciodvfy), orthanc, orthanc-dicomweb, iproute2"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        dicom3tools orthanc orthanc-dicomweb iproute2 >/dev/null
fi

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
