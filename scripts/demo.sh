#!/usr/bin/env bash
# Set up (if needed) and run the demo: a real CT slice through a node to a local Orthanc PACS.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/ainode demo "$@"
