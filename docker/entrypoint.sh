#!/bin/sh
# Entry point of the DeepMiner image.
#
#   serve (default)   the API: python -m service, configured by DEEPMINER_* variables
#   migrate [ARGS]    the store's schema: python -m annotations migrate ARGS
#                     (database from DEEPMINER_DATABASE_URL, as the service reads it)
#   dimse             the DICOM listener: python -m service.dimse, configured by DEEPMINER_DIMSE_* variables
#   anything else     run as given, e.g. `python -m annotations export /data/labels.json`
#
# exec, so that the server is PID 1 and gets the orchestrator's SIGTERM itself.
set -eu

case "${1:-serve}" in
    serve) exec python -m service ;;
    migrate) shift; exec python -m annotations migrate "$@" ;;
    dimse) exec python -m service.dimse ;;
    *) exec "$@" ;;
esac
