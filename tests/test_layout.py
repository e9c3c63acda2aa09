"""The package's shape: the spine (lancer/*.py) never imports the lab (lancer/lab), and no module imports one that comes
after it in the notebooks' order, so the notebooks read top to bottom without forward references."""
import ast
import re
from pathlib import Path

import lancer

PACKAGE = Path(lancer.__file__).parent
NBS = PACKAGE.parent / "nbs"


def imported_modules(path: Path) -> set[str]:
    "The lancer modules `path` imports, at any depth (function-level imports included), as dotted names."
    found, package = set(), "lancer.lab" if path.parent.name == "lab" else "lancer"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:                                   # relative: resolve against the module's package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if base.startswith("lancer"):
                found |= {f"{base}.{a.name}" if base in ("lancer", "lancer.lab") else base for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lancer")}
    return found


def spine_order() -> list[str]:
    "The spine's modules in notebook order (`NN_name.ipynb` or `NNa_name.ipynb` exports `lancer.name`)."
    return [f"lancer.{m.group(1)}" for p in sorted(NBS.glob("[0-9][0-9]*_*.ipynb"))
            if (m := re.match(r"\d\d[a-z]?_(\w+)\.ipynb", p.name))]


def test_the_spine_never_imports_the_lab():
    for path in PACKAGE.glob("*.py"):
        lab = {m for m in imported_modules(path) if m.startswith("lancer.lab")}
        assert not lab, f"{path.name} imports {lab}"


def test_no_spine_module_imports_a_later_one():
    order = spine_order()
    assert order[:6] == ["lancer.data", "lancer.datasets", "lancer.news_and_books", "lancer.download", "lancer.protocol",
                         "lancer.metrics"]
    assert order[-1] == "lancer.cli"
    for i, module in enumerate(order):
        later = {m for m in imported_modules(PACKAGE / f"{module.split('.')[-1]}.py") if m in order[i + 1:]}
        assert not later, f"{module} imports {later}, which a later notebook teaches"


def test_the_checker_sees_relative_and_late_imports(tmp_path):
    (tmp_path / "lab").mkdir()
    f = tmp_path / "lab" / "x.py"
    f.write_text("from ..model import A\nfrom .ablation import B\ndef g():\n    from lancer.cli import main\n")
    assert imported_modules(f) == {"lancer.model", "lancer.lab.ablation", "lancer.cli"}
