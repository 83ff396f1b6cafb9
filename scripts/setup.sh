#!/usr/bin/env bash
# Create or refresh .venv with everything the project needs (torch, training, service, tests).
# Idempotent: installs only when pyproject.toml, this script or the torch pair changed, or an extra is new.
# Environment: PYTHON (default python3), VENV (default .venv),
#              TORCH_SPEC (default "torch==2.14.1 torchvision==0.29.1", the tested pair),
#              EXTRAS (default "all"; the tests add "deploy-test").
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
EXTRAS=${EXTRAS:-all}

if ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null; then
    echo "error: $PYTHON must be Python 3.10 or newer" >&2
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtual environment $VENV"
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        # Debian ships venv separately; install it when we may.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            rm -rf "$VENV" && "$PYTHON" -m venv "$VENV"
        else
            echo "error: '$PYTHON -m venv' failed; install your distribution's python3-venv package" >&2
            exit 1
        fi
    fi
fi

# The stamp records what was installed: line 1 the inputs (this script, pyproject.toml, the torch pair),
# line 2 the extras. Extras are only ever added, so switching between test.sh, serve.sh and bench.sh
# installs nothing once their union is in; a changed pyproject.toml reinstalls that union.
stamp="$VENV/.deepminer-setup"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1) $TORCH_SPEC"
extras_of() { tr ',' '\n' <<<"$1" | sed 's/[[:space:]]//g' | grep -v '^$' | sort -u || true; }
have="" have_extras=""
if [ -f "$stamp" ]; then
    have=$(sed -n 1p "$stamp")
    have_extras=$(sed -n 2p "$stamp")
fi
missing=$(comm -23 <(extras_of "$EXTRAS") <(extras_of "$have_extras"))
if [ "$have" = "$want" ] && [ -z "$missing" ]; then
    exit 0
fi
extras=$(extras_of "$EXTRAS,$have_extras" | paste -sd, -)

echo "==> installing dependencies into $VENV (extras: $extras; first run: a few minutes)"
"$VENV/bin/python" -m pip install -q --upgrade pip
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install -q $TORCH_SPEC
"$VENV/bin/python" -m pip install -q -e ".[$extras]"
printf '%s\n%s\n' "$want" "$extras" > "$stamp"
echo "==> environment ready: $VENV"
