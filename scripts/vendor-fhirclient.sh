#!/usr/bin/env bash
# Copy the browser build of SMART's client-js (npm `fhirclient`, pinned in package.json) into
# app/web/static/vendor/, where the sample app /apps/imaging-timeline/ loads it from. The server
# itself needs no Node at run time: the copied files are committed. Run after changing the pin:
#   npm install && bash scripts/vendor-fhirclient.sh
# then update the version and checksum in app/web/static/vendor/README.md (this script prints them).
set -euo pipefail
cd "$(dirname "$0")/.."

src=node_modules/fhirclient
dest=app/web/static/vendor
# The "pure" build: the library without core-js polyfills, for current browsers (the app also
# needs Web Crypto's crypto.subtle, i.e. a secure context: https, or http on localhost/127.0.0.1).
build=fhir-client.pure.min.js

pinned=$(node -p "require('./package.json').devDependencies.fhirclient")
installed=$(node -p "require('./$src/package.json').version")
if [ "$pinned" != "$installed" ]; then
  echo "vendor-fhirclient: package.json pins fhirclient $pinned but node_modules has $installed; run npm install" >&2
  exit 1
fi

mkdir -p "$dest"
cp "$src/build/$build" "$dest/$build"
cp "$src/build/$build.LICENSE.txt" "$dest/$build.LICENSE.txt"
cp "$src/LICENSE" "$dest/fhirclient.LICENSE"
echo "vendor-fhirclient: fhirclient $installed ($(node -p "require('./$src/package.json').license"))"
sha256sum "$dest/$build"
