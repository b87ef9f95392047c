#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: unit tests, phantom accuracy tests, and
# integration tests against real peers (Orthanc, DCMTK storescu/echoscu, dciodvfy).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CI="${CI:-}"
exec .venv/bin/python -m pytest "$@"
