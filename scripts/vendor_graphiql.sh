#!/usr/bin/env bash
# Refresh the GraphiQL assets that emailkit serves itself at /static/graphiql/.
#
# Self-hosted servers are often offline or firewalled, so the IDE must not load anything from a CDN.
# This script takes the packages from the npm registry with `npm pack` (no node_modules, no build),
# keeps only the files the page loads plus each package's LICENSE, and records what it took in
# VERSIONS.txt. The files are copied byte for byte, so they can be checked against the registry.
#
# Usage: scripts/vendor_graphiql.sh   (needs npm; run from anywhere)
set -euo pipefail

GRAPHIQL_VERSION=3.8.3
REACT_VERSION=18.3.1

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$repo_root/emailkit/web/static/graphiql"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

packages=("graphiql@$GRAPHIQL_VERSION" "react@$REACT_VERSION" "react-dom@$REACT_VERSION")
for spec in "${packages[@]}"; do
    (cd "$work" && npm pack --silent "$spec" >/dev/null)
done

# package tarball -> "path inside the tarball:name under $dest"
declare -A wanted=(
    ["graphiql-$GRAPHIQL_VERSION.tgz"]="package/graphiql.min.js:graphiql.min.js package/graphiql.min.css:graphiql.min.css package/LICENSE:LICENSE.graphiql"
    ["react-$REACT_VERSION.tgz"]="package/umd/react.production.min.js:react.production.min.js package/LICENSE:LICENSE.react"
    ["react-dom-$REACT_VERSION.tgz"]="package/umd/react-dom.production.min.js:react-dom.production.min.js package/LICENSE:LICENSE.react-dom"
)

staging="$work/out"
mkdir -p "$staging"
for tarball in "${!wanted[@]}"; do
    mkdir -p "$work/x"
    for pair in ${wanted[$tarball]}; do
        tar -xzf "$work/$tarball" -C "$work/x" "${pair%%:*}"
        cp "$work/x/${pair%%:*}" "$staging/${pair##*:}"
    done
    rm -rf "$work/x"
done

{
    echo "# Vendored by scripts/vendor_graphiql.sh from the npm registry (npm pack); files are unmodified."
    echo "# package  file  sha256"
    for tarball in "${!wanted[@]}"; do
        name="${tarball%.tgz}"
        for pair in ${wanted[$tarball]}; do
            file="${pair##*:}"
            sum="$(sha256sum "$staging/$file" | cut -d' ' -f1)"
            echo "${name%-*}@${name##*-}  $file  $sum"
        done
    done | sort
} >"$staging/VERSIONS.txt"

rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mv "$staging" "$dest"
echo "vendored into ${dest#"$repo_root"/}:"
ls -l "$dest"
