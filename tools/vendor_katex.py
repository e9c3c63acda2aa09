#!/usr/bin/env python3
"""Make the offline docs site render maths without the network.

The site generator (smalldocs) points pages with maths at KaTeX on a CDN. This copies KaTeX, the same version, from its
npm package into SITE/site_libs/katex (the package is fetched once with `npm pack` and kept in ~/.cache/lancer/katex-V)
and points every page at that copy, so the pages render their equations with no connection at view time.

    python tools/vendor_katex.py SITE
"""
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

CDN = re.compile(r"https://cdn\.jsdelivr\.net/npm/katex@([\w.-]+)/dist")


def katex_dist(version: str, cache: Path) -> Path:
    "KaTeX's `dist` folder of `version`, unpacked from its npm package into `cache` (once)."
    folder = cache / f"katex-{version}"
    if (folder / "katex.min.js").exists(): return folder
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", f"katex@{version}", "--pack-destination", tmp, "--silent"], check=True,
                       capture_output=True, text=True, timeout=300)
        with tarfile.open(next(Path(tmp).glob("katex-*.tgz"))) as tar: tar.extractall(tmp, filter="data")
        staging = cache / f".katex-{version}.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(Path(tmp) / "package" / "dist", staging)
        os.replace(staging, folder)
    return folder


def vendor(site: Path, cache: Path) -> list[Path]:
    "Copy KaTeX into `site` and rewrite the pages that load it from the CDN; returns the rewritten pages."
    pages = [p for p in site.rglob("*.html") if CDN.search(p.read_text(encoding="utf-8"))]
    versions = {m.group(1) for p in pages for m in CDN.finditer(p.read_text(encoding="utf-8"))}
    if len(versions) > 1: sys.exit(f"vendor_katex.py: pages load several KaTeX versions: {sorted(versions)}")
    for version in versions:
        shutil.copytree(katex_dist(version, cache), site / "site_libs" / "katex", dirs_exist_ok=True)
    for page in pages:
        local = os.path.relpath(site / "site_libs" / "katex", page.parent).replace(os.sep, "/")
        page.write_text(CDN.sub(local, page.read_text(encoding="utf-8")), encoding="utf-8")
    return pages


if __name__ == "__main__":
    if len(sys.argv) != 2: sys.exit(__doc__)
    cache = Path(os.environ.get("LANCER_CACHE") or Path.home() / ".cache" / "lancer")
    rewritten = vendor(Path(sys.argv[1]), cache)
    print(f"vendor_katex.py: {len(rewritten)} pages now load KaTeX from site_libs/katex")
