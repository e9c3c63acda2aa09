#!/usr/bin/env bash
# Screenshots of the built docs for a human to look at, with headless Chromium (Debian: apt-get install -y chromium).
#
#   bash tools/screenshot.sh [SITE_DIR] [OUT_DIR] [PAGE.html ...]
#
# SITE_DIR defaults to <repo>/_docs (build it with tools/build_docs.sh), OUT_DIR to ${TMPDIR:-/tmp}/lancer-screenshots
# (outside the repo). Pages default to index.html plus tutorial.html (or, without one, the first other page). One PNG per page,
# 1280x1600, named after the page. Pages load from file://; maths renders with the KaTeX copy inside the site.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
site="${1:-$repo/_docs}"
out="${2:-${TMPDIR:-/tmp}/lancer-screenshots}"
shift $(( $# < 2 ? $# : 2 ))
pages=("$@")

browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
[ -n "$browser" ] || { echo "screenshot.sh: no chromium found; install it: apt-get install -y chromium" >&2; exit 1; }
[ -f "$site/index.html" ] || { echo "screenshot.sh: $site/index.html missing; run bash tools/build_docs.sh first" >&2; exit 1; }
site="$(cd "$site" && pwd)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

if [ ${#pages[@]} -eq 0 ]; then
  pages=(index.html)
  if [ -f "$site/tutorial.html" ]; then tutorial=tutorial.html
  else tutorial="$(cd "$site" && ls *.html 2>/dev/null | grep -v '^index' | sort | head -n 1 || true)"; fi
  [ -n "$tutorial" ] && pages+=("$tutorial")
fi

profile="$(mktemp -d "${TMPDIR:-/tmp}/lancer-chromium.XXXXXX")"
trap 'rm -rf "$profile"' EXIT
for page in "${pages[@]}"; do
  [ -f "$site/$page" ] || { echo "screenshot.sh: no page $site/$page" >&2; exit 1; }
  name="${page%.html}"
  png="$out/${name//\//_}.png"
  timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --hide-scrollbars \
    --user-data-dir="$profile" --screenshot="$png" --window-size=1280,1600 \
    "file://$site/$page" >/dev/null 2>&1 || true
  [ -s "$png" ] || { echo "screenshot.sh: chromium wrote no $png" >&2; exit 1; }
  echo "$png"
done
