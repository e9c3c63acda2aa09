#!/usr/bin/env bash
# Build the documentation website offline, from a scratch copy of the project.
#
#   bash tools/build_docs.sh [--no-exec] [--n_workers N] [OUT_DIR]
#
# 1. copies the working tree (tracked files plus untracked, not ignored ones) into a temporary folder,
#    so the committed notebooks keep no outputs and nothing in the repo is written except OUT_DIR;
# 2. executes the copied notebooks (tools/exec_nbs.py: like nbdev_test, `#| slow` / `#| cuda` cells
#    skipped) so the pages show outputs; --no-exec skips this (pages show code only; faster);
# 3. runs plain `nbdev_docs` in the copy with tools/ first on PATH, so `quarto` is the offline
#    stand-in tools/quarto (smalldocs); with real Quarto installed use `nbdev_docs` directly instead;
# 4. moves the site to OUT_DIR (default: <repo>/_docs, which git ignores).
#
# LANCER_DOCS_KEEP=1 keeps the scratch folder (printed) for debugging.
# Offline: HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1. Exit status non-zero on any failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
execute=1
n_workers=2
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --no-exec) execute=0 ;;
    --n_workers) n_workers="$2"; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "build_docs.sh: unknown option $1" >&2; exit 2 ;;
    *) out="$1" ;;
  esac
  shift
done
out="${out:-$repo/_docs}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
# OUT_DIR is replaced: refuse a folder that is not empty and not a previous site
if [ -d "$out" ] && [ -n "$(ls -A "$out")" ] && [ ! -f "$out/search.json" ] && [ ! -f "$out/index.html" ]; then
  echo "build_docs.sh: $out is not empty and holds no site; not replacing it" >&2; exit 2
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export PATH="$here:$PATH"
# nbdev_docs pip-installs the project when it finds no `quarto`: make sure it finds the stand-in.
if [ "$(command -v quarto)" != "$here/quarto" ]; then
  echo "build_docs.sh: 'quarto' resolves to $(command -v quarto), not $here/quarto" >&2; exit 1
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/lancer-docs.XXXXXX")"
if [ "${LANCER_DOCS_KEEP:-0}" = 1 ]; then echo "build_docs.sh: keeping $work"; else trap 'rm -rf "$work"' EXIT; fi
proj="$work/project"
mkdir -p "$proj"

# 1. scratch copy of the working tree
cd "$repo"
if [ "$(git rev-parse --show-toplevel 2>/dev/null)" = "$repo" ]; then
  git ls-files -z -co --exclude-standard \
    | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf - | tar -xf - -C "$proj"
else
  tar --exclude=.git --exclude=_docs --exclude=_proc --exclude=.quarto --exclude='*.egg-info' \
      --exclude=runs --exclude=checkpoints --exclude=.cache -cf - . | tar -xf - -C "$proj"
fi
rm -rf "$proj/_docs" "$proj/_proc"
# the copy's `lancer` package wins over an editable install of the repo
export PYTHONPATH="$proj${PYTHONPATH:+:$PYTHONPATH}"
nbs="$(cd "$proj" && python -c 'from nbdev.config import get_config; print(get_config().nbs_path)')"

# 2. execute the notebooks in the copy
if [ "$execute" = 1 ]; then
  echo "== executing notebooks ($n_workers workers)"
  # one OpenMP thread per notebook process when several run at once (oversubscribed cores slow torch down several-fold)
  if [ "$n_workers" -gt 1 ]; then export OMP_NUM_THREADS=1; fi
  # a static page shows a progress bar as hundreds of lines: none while the docs execute
  export TQDM_DISABLE=1 HF_DATASETS_DISABLE_PROGRESS_BARS=1
  (cd "$proj" && python "$here/exec_nbs.py" "$nbs" --n_workers "$n_workers")
fi

# 3. build the site with plain nbdev_docs (quarto -> stand-in). nbdev_docs re-renders README.md when index.ipynb is
# newer (as it is once executed); the README has its own command (nbdev_readme), and its render would leave figures in
# the folder the site is built into
touch "$proj/README.md"
echo "== nbdev_docs"
(cd "$proj" && nbdev_docs --n_workers "$n_workers")

# 4. hand over the site
docs="$(cd "$proj" && python -c 'from nbdev.config import get_config; print(get_config().doc_path)')"
[ -f "$docs/index.html" ] || { echo "build_docs.sh: no $docs/index.html was built" >&2; exit 1; }
# 3b. maths without the network: KaTeX from its npm package, copied into the site
(cd "$proj" && python "$here/vendor_katex.py" "$docs")
# 3c. page names as Quarto writes them (nbdev's output-file: 02_metrics.ipynb -> metrics.html)
(cd "$proj" && python "$here/quarto_names.py" "$docs")
rm -rf "$out"
mkdir -p "$(dirname "$out")"
cp -a "$docs" "$out"
echo "== site written to $out"
