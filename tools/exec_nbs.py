"""Execute notebooks in place (on a scratch copy!) so the docs pages show their outputs.

Runs each notebook the way `nbdev_test` does (execnb, working directory = the notebook's folder, cells
flagged with a `tst_flags` flag from settings.ini such as `#| slow` / `#| cuda` skipped, `#| eval: false`
skipped) and writes the notebook back with the outputs. Stops with exit status 1, printing the traceback
and the notebook name, if any cell fails.

    python tools/exec_nbs.py NBS_DIR [--n_workers 2] [--skip_flags "slow cuda"]

Never point it at the committed `nbs/`: nbdev keeps notebooks without outputs.
"""
import argparse
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def exec_nb(fn: Path, skip_flags: list[str]) -> tuple[bool, float, str]:
    "Execute `fn` and save it with outputs: (ok, seconds, error text)."
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    from nbdev.process import extract_directives
    start = time.time()
    nb = read_nb(fn)
    flags = set(skip_flags)

    def _skip(cell):
        if cell.cell_type != "code": return True
        if "nbdev_export(" in cell.source: return True
        direc = extract_directives(cell, remove=False)  # reads only
        if direc.get("eval:", [""])[0].lower() == "false": return True
        return bool(flags & direc.keys())

    shell = CaptureShell(fn)
    try:
        with working_directory(fn.parent):
            shell.run_all(nb, exc_stop=True, preproc=_skip)
    except BaseException as e:
        try: err = shell.prettytb(fname=fn)
        except Exception: err = f"{type(e).__name__} in {fn}: {e}"
        return False, time.time() - start, err
    write_nb(nb, fn)
    return True, time.time() - start, ""


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("nbs_dir", type=Path)
    p.add_argument("--n_workers", type=int, default=2)
    p.add_argument("--skip_flags", default=None, help="space separated; default: tst_flags from settings.ini")
    a = p.parse_args()
    if a.skip_flags is None:
        from nbdev.config import get_config
        a.skip_flags = get_config(path=a.nbs_dir).get("tst_flags", "")
    files = sorted(f.resolve() for f in a.nbs_dir.rglob("*.ipynb")
                   if not any(part.startswith((".", "_")) for part in f.relative_to(a.nbs_dir).parts))
    if not files: sys.exit(f"exec_nbs: no notebooks under {a.nbs_dir}")
    sys.path.insert(0, str(a.nbs_dir.resolve().parent))  # the scratch project's package, like nbdev_test's basepath
    # one process per notebook (a fresh IPython shell and fresh imports each time), n_workers at once
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, a.n_workers), mp_context=ctx, max_tasks_per_child=1) as pool:
        results = list(pool.map(exec_nb, files, [a.skip_flags.split()] * len(files)))
    failed = []
    for f, (ok, secs, err) in zip(files, results):
        print(f"{'ok    ' if ok else 'FAILED'} {secs:6.1f}s  {f.name}")
        if not ok:
            failed.append(f.name)
            sys.stderr.write(err + "\n")
    if failed: sys.exit(f"exec_nbs: notebooks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
