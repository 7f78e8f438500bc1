#!/usr/bin/env bash
# Rebuild the emailkit console into emailkit/web/static/console/ (committed, so `pip install` needs no Node).
#
# Reproducible: `npm ci` installs exactly console/package-lock.json, the types are regenerated from the
# committed schema.graphql, the TypeScript is type-checked, and esbuild writes files with no timestamp or
# hash in them. Run it after changing console/src or schema.graphql, and commit what changed.
#
# Usage: scripts/build_console.sh   (needs Node 20 and npm; run from anywhere)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../console"
npm ci --no-audit --no-fund --loglevel=error
npm run --silent codegen -- --silent
npm run --silent typecheck
npm run --silent build
out=../emailkit/web/static/console
for f in "$out"/console.css "$out"/console.js "$out"/chunk-*.js; do
    printf '%s: %s bytes, %s gzipped\n' "${f#../}" "$(wc -c <"$f")" "$(gzip -9c "$f" | wc -c)"
done
# What a first load fetches: the entry and the chunks index.html preloads (the other chunks are screens).
first=("$out"/console.js $(sed -n 's#.*modulepreload" href="/static/console/\([^"]*\)".*#'"$out"'/\1#p' "$out"/index.html))
printf 'first load: %s bytes of JavaScript, %s gzipped; all screens: %s bytes, %s gzipped\n' \
    "$(cat "${first[@]}" | wc -c)" "$(for f in "${first[@]}"; do gzip -9c "$f"; done | wc -c)" \
    "$(cat "$out"/*.js | wc -c)" "$(for f in "$out"/*.js; do gzip -9c "$f"; done | wc -c)"
