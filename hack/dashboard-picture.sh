#!/usr/bin/env bash
# The README's dashboard picture, taken for real: installs the tool package hack/dashboard-picture
# (its own dependencies, not the product's) on first use, then runs it. Options: --help.
set -euo pipefail
tool="$(cd "$(dirname "${BASH_SOURCE[0]}")/dashboard-picture" && pwd)"
if [[ ! -d "$tool/node_modules" ]]; then
  echo "dashboard-picture: npm ci in $tool (Grafana's panel libraries, React, esbuild)"
  npm --prefix "$tool" ci --no-audit --no-fund
fi
npm --prefix "$tool" run --silent build
exec node "$tool/dist/picture.mjs" "$@"
