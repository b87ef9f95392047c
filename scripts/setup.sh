#!/usr/bin/env bash
# Set up ainode on a fresh Debian/Ubuntu machine: Debian packages (Orthanc, DCMTK, dicom3tools)
# and a Python virtual environment in .venv with ainode and its test dependencies.
# Idempotent: re-running skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

missing=()
command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
# Orthanc's DICOMweb plugin: the STOW-RS tests (tests/node/test_dicomweb_*.py) load it.
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)
command -v storescu >/dev/null 2>&1 || missing+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || missing+=(dicom3tools)
# PostgreSQL server binaries: the database tests start a throw-away cluster of their own.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
# Brain template and atlases (Colin27, AAL, JHU) for the brain-gwr reference method's build step.
[ -f /usr/share/mricron/templates/ch2.nii.gz ] || missing+=(mricron-data)
# RabbitMQ: broker of the Celery runner backend (the scale-out tests start their own server).
command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || missing+=(rabbitmq-server)
# Chromium: the dashboard tests drive it headless with Playwright.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  # The Debian orthanc package starts a system service on port 4242/8042; ainode's tests and demo
  # start their own Orthanc on free ports and do not need it.
  for service in orthanc rabbitmq-server; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$service" 2>/dev/null; then
      $SUDO systemctl stop "$service" || true
    fi
  done
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# Pin torch first: an unpinned torch pulls a multi-GB CUDA build; 2.13.0 is a CPU build here.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test,demo,postgres]"
echo "setup: done ($(.venv/bin/python -c 'import torch, highdicom, pynetdicom; print("torch", torch.__version__, "highdicom", highdicom.__version__, "pynetdicom", pynetdicom.__version__)'))"
