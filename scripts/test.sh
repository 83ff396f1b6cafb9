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

# PostgreSQL: the store, API and fault tests need a real server, and fail without one. When nothing usable
# answers at DEEPMINER_TEST_POSTGRES_URL on this machine: install PostgreSQL (root on Debian), start the cluster
# that serves that port, or create one there for the tests (Debian's pg_createcluster: trust on loopback only)
# and its database.
export DEEPMINER_TEST_POSTGRES_URL=${DEEPMINER_TEST_POSTGRES_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test}
postgres_answers() {
    .venv/bin/python - "$DEEPMINER_TEST_POSTGRES_URL" <<'PY' 2>/dev/null
import sys
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

engine = create_engine(make_url(sys.argv[1]).set(drivername="postgresql+psycopg"), connect_args={"connect_timeout": 3})
with engine.connect() as conn:
    conn.execute(text("SELECT 1"))
PY
}
read -r PG_HOST PG_PORT PG_USER PG_DB < <(.venv/bin/python - "$DEEPMINER_TEST_POSTGRES_URL" <<'PY'
import sys
from sqlalchemy.engine import make_url

url = make_url(sys.argv[1])
print(url.host or "localhost", url.port or 5432, url.username or "postgres", url.database or "postgres")
PY
)
if ! postgres_answers && [[ $PG_HOST =~ ^(127\.0\.0\.1|localhost|::1)$ ]]; then
    if ! command -v pg_ctlcluster >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "==> installing Debian packages for the tests: postgresql"
        # No default cluster: the one made below for the tests is all they use.
        mkdir -p /etc/postgresql-common/createcluster.d
        echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/deepminer-tests.conf
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            postgresql >/dev/null
        rm -f /etc/postgresql-common/createcluster.d/deepminer-tests.conf
    fi
    if command -v pg_lsclusters >/dev/null; then
        cluster=$(pg_lsclusters --no-header | awk -v port="$PG_PORT" '$3 == port { print $1, $2, $4; exit }')
        if [ -n "$cluster" ] && [ "${cluster##* }" = down ]; then
            echo "==> starting PostgreSQL ${cluster% *}"
            pg_ctlcluster --skip-systemctl-redirect ${cluster% *} start || true
        elif [ -z "$cluster" ] && [ "$(id -u)" = 0 ]; then
            version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
            echo "==> creating PostgreSQL cluster $version/deepminer-tests on port $PG_PORT (trust on loopback)"
            pg_createcluster --port "$PG_PORT" --start "$version" deepminer-tests -- \
                --auth-local=peer --auth-host=trust --username="$PG_USER" >/dev/null
            pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 30
            [ "$PG_DB" = postgres ] || createdb -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" "$PG_DB"
        fi
        for _ in $(seq 1 30); do pg_isready -q -h "$PG_HOST" -p "$PG_PORT" && break; sleep 1; done
    fi
fi
postgres_answers || echo "==> PostgreSQL does not answer at $DEEPMINER_TEST_POSTGRES_URL: the tests that need it will fail"

exec .venv/bin/python -m pytest "$@"
