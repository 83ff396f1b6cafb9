#!/usr/bin/env bash
# Set up, then serve explanations on the configured model bundle.
# With no bundle at $DEEPMINER_BUNDLE (default bundles/demo), build the demo bundle
# on phantom mammograms first (a few minutes on 2 CPU cores).
# Settings are DEEPMINER_* environment variables (see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DEEPMINER_BUNDLE=${DEEPMINER_BUNDLE:-bundles/demo}

if [ ! -f "$DEEPMINER_BUNDLE/meta.json" ]; then
    if [ "$DEEPMINER_BUNDLE" != "bundles/demo" ]; then
        echo "error: no model bundle at DEEPMINER_BUNDLE=$DEEPMINER_BUNDLE (expected a directory with meta.json)" >&2
        exit 1
    fi
    echo "==> no bundle at $DEEPMINER_BUNDLE: building the demo bundle on phantoms"
    .venv/bin/python -m training demo --out "$DEEPMINER_BUNDLE" --data data/phantoms
fi
if [ "$DEEPMINER_BUNDLE" = "bundles/demo" ]; then
    # The demo bundle has no expert labels yet, only automatic ones (concept_labels.json): let them explain.
    export DEEPMINER_EXPLAIN_AUTOMATIC_LABELS=${DEEPMINER_EXPLAIN_AUTOMATIC_LABELS:-true}
    if [ "$DEEPMINER_EXPLAIN_AUTOMATIC_LABELS" = "true" ]; then
        echo "==> demo bundle: DEEPMINER_EXPLAIN_AUTOMATIC_LABELS=true, so explanations also name units by its" \
            "automatic labels, each marked 'automatic label' (the paper's explanations use expert labels only)"
    fi
fi
exec .venv/bin/python -m service
