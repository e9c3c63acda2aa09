#!/usr/bin/env python3
"""Give the offline site's pages the names Quarto gives them, so one link works on both builds.

nbdev asks Quarto to drop a notebook's number prefix from its page (`02_metrics.ipynb` -> `metrics.html`, its
`output-file`); the offline site generator keeps the notebook's name. This renames every `NN_name.html` of SITE to
`name.html` and rewrites the links to it in every page, the search index and the sitemap.

    python tools/quarto_names.py SITE
"""
import re
import sys
from pathlib import Path

NUMBERED = re.compile(r"^\d+_(.+\.html)$")


def rename(site: Path) -> dict[str, str]:
    "Rename the numbered pages of `site` and rewrite every reference to them; returns {old name: new name}."
    pages = {p.name: NUMBERED.match(p.name).group(1) for p in site.rglob("*.html") if NUMBERED.match(p.name)}
    if not pages: return {}
    pattern = re.compile(r"(?<![\w-])(" + "|".join(re.escape(old) for old in pages) + r")(?=[#\"'?)\s]|$)")
    for f in [*site.rglob("*.html"), *site.rglob("search.json"), *site.rglob("sitemap.xml")]:
        text = f.read_text(encoding="utf-8")
        new = pattern.sub(lambda m: pages[m.group(1)], text)
        if new != text: f.write_text(new, encoding="utf-8")
    for old, new in pages.items():
        for p in site.rglob(old): p.rename(p.with_name(new))
    return pages


if __name__ == "__main__":
    if len(sys.argv) != 2: sys.exit(__doc__)
    renamed = rename(Path(sys.argv[1]))
    print(f"quarto_names.py: {len(renamed)} pages renamed as Quarto names them (e.g. {next(iter(renamed.items()), '-')})")
