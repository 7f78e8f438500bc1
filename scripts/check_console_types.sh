#!/usr/bin/env bash
# Fail when the console's generated GraphQL types (console/src/generated/graphql.ts) are stale: regenerate
# them from the committed schema.graphql and compare. Also fails when an operation of the console no longer
# validates against the schema (graphql-codegen checks every document), and type-checks the console.
#
# Fix a failure with: scripts/build_console.sh   (then commit console/src/generated and the bundle)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../console"
npm ci --no-audit --no-fund --loglevel=error
generated=src/generated/graphql.ts
kept=$(mktemp)
trap 'cp "$kept" "$generated"; rm -f "$kept"' EXIT
cp "$generated" "$kept"
npm run --silent codegen -- --silent
if ! cmp -s "$kept" "$generated"; then
    echo "FAIL: console/src/generated/graphql.ts is stale against schema.graphql:" >&2
    diff -u "$kept" "$generated" | head -40 >&2 || true
    echo "Run scripts/build_console.sh and commit the result." >&2
    exit 1
fi
npm run --silent typecheck
echo "console types match schema.graphql"
