"""The documentation site builds offline, with a page per notebook, titles, navigation and no errors.

The site is built with `tools/build_docs.sh` (plain `nbdev_docs`, `quarto` = the offline stand-in
`tools/quarto`, which renders with smalldocs) from a snapshot of the working tree in a temporary folder:
nothing in the repo is written, and concurrent runs do not share files. The notebooks are discovered in
the snapshot, so the test follows notebooks as they are added.

- `test_site_*`: build without executing the notebooks (like the GitHub deploy without the execute
  step; nbdev still runs the import and `show_doc` cells).
- `test_executed_site`, marked slow (`pytest --slow`): executes every notebook first, as
  `bash tools/build_docs.sh` does for a human, and checks the pages again, outputs included.
"""
import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"


def snapshot(dest: Path) -> Path:
    "Copy the working tree (tracked files plus untracked, not ignored ones) to `dest`."
    dest.mkdir(parents=True)
    try:
        out = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO,
                             capture_output=True, check=True).stdout
        files = [f for f in out.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", "_docs", "_proc", ".quarto", "runs", "checkpoints", ".cache", "__pycache__"}
        files = [str(p.relative_to(REPO)) for p in REPO.rglob("*")
                 if p.is_file() and not skip & set(p.relative_to(REPO).parts)]
    for f in files:
        src = REPO / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    return dest


def notebooks(project: Path) -> list[Path]:
    "Notebooks nbdev renders: under nbs/, skipping names starting with `_` or `.`."
    nbs = project / "nbs"
    return sorted(p for p in nbs.rglob("*.ipynb")
                  if not any(part.startswith((".", "_")) for part in p.relative_to(nbs).parts))


def page_for(site: Path, project: Path, nb: Path) -> Path:
    "The page built from `nb`: Quarto names it by nbdev's `output-file` (number prefix dropped), smalldocs by the notebook."
    rel = nb.relative_to(project / "nbs").with_suffix(".html")
    for cand in (rel, rel.with_name(re.sub(r"^\d+_", "", rel.name))):
        if (site / cand).exists(): return site / cand
    built = sorted(str(p.relative_to(site)) for p in site.rglob("*.html"))
    pytest.fail(f"no page for {nb.relative_to(project)}: expected {rel} ; pages built: {built}")


def title_of(nb: Path) -> str:
    "Text of the notebook's `# Title` (first markdown cell), markdown marks removed."
    for cell in nbformat.read(nb, as_version=4).cells:
        if cell.cell_type != "markdown": continue
        m = re.search(r"^#\s+(.+?)\s*$", cell.source, re.M)
        if m: return re.sub(r"[`*_]", "", m.group(1)).strip()
        break
    pytest.fail(f"{nb.name}: the first markdown cell has no '# Title' line (nbdev takes the page title from it)")


def text(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", fragment)).split())


def build(tmp: Path, execute: bool) -> tuple[Path, Path]:
    "Snapshot the repo into `tmp` and build its site into `tmp/site`: (project, site)."
    project = snapshot(tmp / "project")
    site = tmp / "site"
    env = {**os.environ, "TMPDIR": str(tmp), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    cmd = ["bash", str(project / "tools" / "build_docs.sh"), *([] if execute else ["--no-exec"]), str(site)]
    res = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=1800)
    if res.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-8000:]}")
    return project, site


def check_site(project: Path, site: Path):
    nbs = notebooks(project)
    assert nbs, "no notebooks under nbs/"
    assert (site / "index.html").exists()
    pages = {nb: page_for(site, project, nb) for nb in nbs}
    problems = []
    for nb, page in pages.items():
        src, name = page.read_text(encoding="utf-8"), nb.name
        # title: in the page's <h1 class="title"> (Quarto and smalldocs both write it)
        h1s = [text(h) for h in re.findall(r"<h1[^>]*>(.*?)</h1>", src, re.S)]
        want = title_of(nb)
        if not any(want == h or want in h for h in h1s): problems.append(f"{name}: title {want!r} not in <h1> {h1s}")
        # navigation: the navbar and a sidebar linking every page
        if 'class="navbar' not in src: problems.append(f"{name}: no navbar")
        if 'id="quarto-sidebar"' not in src: problems.append(f"{name}: no sidebar")
        for other in pages.values():
            href = os.path.relpath(other, page.parent).replace(os.sep, "/")
            if f'href="{href}"' not in src and f'href="./{href}"' not in src:
                problems.append(f"{name}: no link to {href}")
        # no error output, no traceback
        if "cell-output-error" in src: problems.append(f"{name}: has an error output")
        if "Traceback (most recent call last)" in src: problems.append(f"{name}: has a Python traceback")
    assert not problems, "\n".join(problems)
    return pages


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return build(tmp_path_factory.mktemp("docs"), execute=False)


def test_site_pages(site):
    "A page for every notebook, with its title, the navbar and sidebar, and no error output."
    check_site(*site)


def test_site_is_searchable(site):
    project, site_dir = site
    assert (site_dir / "search.json").exists(), "search index missing"
    for nb in notebooks(project):
        assert title_of(nb) in (site_dir / "search.json").read_text(encoding="utf-8"), f"{nb.name} not in search.json"


def test_site_renders_maths_without_the_network(site):
    "Pages with maths load the KaTeX copied into the site (from its npm package), and no script or style from elsewhere."
    project, site_dir = site
    assert (site_dir / "site_libs" / "katex" / "katex.min.js").exists()
    metrics = (site_dir / "metrics.html").read_text(encoding="utf-8")
    assert "site_libs/katex/katex.min.js" in metrics and "auto-render.min.js" in metrics
    for page in site_dir.rglob("*.html"):
        external = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', page.read_text(encoding="utf-8"))
        assert not external, f"{page.name} loads {external}"


def test_site_has_no_dead_internal_link(site):
    "Every internal link of every page leads to a file of the site and, with an anchor, to an element with that id."
    _, site_dir = site
    pages = list(site_dir.rglob("*.html"))
    ids = {p.resolve(): set(re.findall(r'id="([^"]+)"', p.read_text(encoding="utf-8"))) for p in pages}
    dead = []
    for page in pages:
        for href in re.findall(r'href="([^"]+)"', page.read_text(encoding="utf-8")):
            if re.match(r"^(https?:|mailto:|javascript:|data:)", href): continue
            path, _, anchor = html.unescape(href).partition("#")
            target = (page.parent / path).resolve() if path else page.resolve()
            if not target.exists() or (anchor and target.suffix == ".html" and anchor not in ids[target]):
                dead.append(f"{page.name} -> {href}")
    assert not dead, dead[:20]
    assert (site_dir / "metrics.html").exists() and not (site_dir / "02_metrics.html").exists()   # Quarto's page names


def test_quarto_standin_markdown(tmp_path):
    "The stand-in's `render NB -t gfm` (nbdev_readme): front matter as title, hidden/echo-less cells honoured, images saved."
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "_quarto.yml").write_text("project:\n  type: website\nmetadata-files: [nbdev.yml, sidebar.yml]\n")
    (proj / "nbdev.yml").write_text("project:\n  output-dir: _docs\n")
    png = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_raw_cell("---\ntitle: My lib\ndescription: Does things\n---\n"),
        nbformat.v4.new_markdown_cell("Some *prose*."),
        nbformat.v4.new_code_cell("#| include: false\nsecret = 1"),
        nbformat.v4.new_code_cell("#| echo: false\nshown_output()",
                                  outputs=[nbformat.v4.new_output("stream", name="stdout", text="only the output\n")]),
        nbformat.v4.new_code_cell("1 + 1", outputs=[nbformat.v4.new_output("execute_result", data={"text/plain": "2"},
                                                                            execution_count=1)]),
        nbformat.v4.new_code_cell("plot()", outputs=[nbformat.v4.new_output("display_data", data={"image/png": png})]),
    ]
    nbformat.write(nb, proj / "index.ipynb")
    res = subprocess.run([sys.executable, str(TOOLS / "quarto"), "render", str(proj / "index.ipynb"), "-o", "README.md",
                          "-t", "gfm", "--no-execute"], cwd=proj, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    md = (proj / "_docs" / "README.md").read_text()
    assert md.startswith("# My lib\n\n> Does things"), md[:200]
    assert "Some *prose*." in md and "1 + 1" in md and "only the output" in md
    assert "secret" not in md and "shown_output" not in md and "#|" not in md
    imgs = list((proj / "_docs" / "index_files").glob("*.png"))
    assert len(imgs) == 1 and imgs[0].name in md


def test_quarto_standin_rejects_unknown(tmp_path):
    res = subprocess.run([sys.executable, str(TOOLS / "quarto"), "publish", "gh-pages"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert res.returncode == 2 and "not supported" in res.stderr


@pytest.mark.slow
def test_executed_site(tmp_path):
    "Executes every notebook (flags from settings.ini skipped), builds, and checks the pages with their outputs."
    project, site_dir = build(tmp_path, execute=True)
    pages = check_site(project, site_dir)
    assert any("cell-output" in p.read_text(encoding="utf-8") for p in pages.values()), "no page shows an output"
