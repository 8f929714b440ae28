"""Mutation-testing figure for the input layer and the synchroniser (issue 24): how many of mutmut's mutants of
these modules the fast unit tests kill, per module, and which survive.

The modules, the tests and mutmut's settings are ``[tool.mutmut]`` in pyproject.toml. The script copies what the
tests need into ``build/mutation/`` (git-ignored) and runs mutmut there, so nothing mutmut writes, ``mutmut apply``
included, can touch the working tree, and ``../shared`` (upstream's event recordings) is found from the copy as
from the checkout. mutmut runs only the tests that reach a mutated function (it records them in a first pass).

Mutants read and judged equivalent (no observable behaviour changes) are listed with the reason in
``benchmarks/mutation_equivalents.yaml``; each entry carries the mutated lines, so an entry whose mutant changed
since (its function was edited) is reported as stale instead of being counted. The figure is given both raw and
without the equivalents; docs/mutation.md has the last run.

    python benchmarks/mutation.py                 # fresh run (≈8 min on 2 cores), table, survivors
    python benchmarks/mutation.py --report        # the table and survivors of the last run again
    python benchmarks/mutation.py --rerun 'memsam_ros.sync.*'   # copy the tests again, re-run those mutants
    python benchmarks/mutation.py --show NAME     # one mutant's diff

``--rerun`` keeps the other results, unless ``[tool.mutmut]`` changed (then mutmut forgets them all: run afresh).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "build" / "mutation"
COPIED = ("memsam_core", "memsam_ros", "tests", "msg", "pyproject.toml", "setup.cfg")
SHARED = ROOT.parent / "shared"
EQUIVALENTS = ROOT / "benchmarks" / "mutation_equivalents.yaml"
TARGET = 0.90
# mutmut's exit codes (mutmut.stats.status_by_exit_code) folded into the table's columns
KILLED, TIMEOUT, SURVIVED, NO_TESTS = "killed", "timeout", "survived", "no tests"
STATUS = {1: KILLED, 3: KILLED, 0: SURVIVED, 5: NO_TESTS, 33: NO_TESTS}
STATUS |= dict.fromkeys((36, 24, -24, 152, 255), TIMEOUT)


def mutated_modules() -> list[str]:
    """The files mutmut mutates (``only_mutate``), as paths relative to the project."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]["only_mutate"]


# ---------------------------------------------------------------------------------------------------- running
def stage(fresh: bool) -> None:
    """Copy the project parts the tests need into STAGE (over the previous copy unless ``fresh``)."""
    if fresh and STAGE.exists():
        shutil.rmtree(STAGE)
    STAGE.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".hypothesis")
    for name in COPIED:
        source, target = ROOT / name, STAGE / name
        if target.is_symlink():  # never copy through a link into the checkout
            target.unlink()
        if source.is_dir():
            shutil.copytree(source, target, ignore=ignore, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
    link = STAGE / "shared"  # the tests look for ../shared beside the project; mutmut's copy is two levels down
    if SHARED.is_dir() and not link.exists():
        link.symlink_to(SHARED)
    if not SHARED.is_dir():
        print(f"warning: {SHARED} is absent: the tests on upstream's event recordings skip, the figure is lower")


def run_mutmut(jobs: int, names: list[str]) -> float:
    """``mutmut run`` in STAGE; returns the wall time in seconds."""
    mutmut = Path(sys.executable).with_name("mutmut")
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    started = time.monotonic()
    subprocess.run([str(mutmut), "run", "--max-children", str(jobs), *names], cwd=STAGE, env=env, check=True)
    return time.monotonic() - started


# ---------------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Mutant:
    name: str
    module: str  # path relative to the project
    status: str


def read_results() -> list[Mutant]:
    """Every mutant of the mutated modules with its status, from mutmut's ``.meta`` files."""
    mutants = []
    for module in mutated_modules():
        meta = STAGE / "mutants" / f"{module}.meta"
        if not meta.exists():
            raise SystemExit(f"no results for {module} in {meta.parent}: run this script without --report first")
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            status = "not checked" if code is None else STATUS.get(code, f"other ({code})")
            mutants.append(Mutant(name, module, status))
    return mutants


def mutant_diff(mutant: Mutant) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant  # reads mutants/ relative to the working directory

    with contextlib.chdir(STAGE):
        return get_diff_for_mutant(mutant.name, path=mutant.module)


def changed_lines(diff: str) -> str:
    """The removed and added lines of a diff, stripped, ``" / "``-joined: what identifies a mutation."""
    lines = diff.splitlines()[2:]  # without the ---/+++ header
    return " / ".join(line[0] + line[1:].strip() for line in lines if line[:1] in "-+")


def load_equivalents() -> dict[str, dict[str, str]]:
    entries = yaml.safe_load(EQUIVALENTS.read_text()) if EQUIVALENTS.exists() else None
    return {entry["mutant"]: entry for entry in entries or []}


@dataclass
class Row:
    mutants: int = 0
    killed: int = 0
    timeout: int = 0
    survived: int = 0
    equivalent: int = 0
    no_tests: int = 0
    other: int = 0

    def add(self, status: str, equivalent: bool) -> None:
        self.mutants += 1
        if status == KILLED:
            self.killed += 1
        elif status == TIMEOUT:
            self.timeout += 1
        elif status == SURVIVED:
            self.survived += 1
            self.equivalent += equivalent
        elif status == NO_TESTS:
            self.no_tests += 1
        else:
            self.other += 1

    @property
    def share(self) -> float:
        """Killed (a hang counts: the tests caught it) among all mutants."""
        return (self.killed + self.timeout) / max(self.mutants, 1)

    @property
    def share_without_equivalents(self) -> float:
        return (self.killed + self.timeout) / max(self.mutants - self.equivalent, 1)


HEADER = ("module", "mutants", "killed", "timeout", "survived", "of them equivalent", "no tests", "other", "killed %",
          "killed % w/o equivalent")  # fmt: skip


def cells(name: str, row: Row) -> list[str]:
    counts = (row.mutants, row.killed, row.timeout, row.survived, row.equivalent, row.no_tests, row.other)
    return [name, *map(str, counts), f"{100 * row.share:.1f}", f"{100 * row.share_without_equivalents:.1f}"]


def print_table(rows: dict[str, Row], total: Row, markdown: bool) -> None:
    table = [list(HEADER), *(cells(m, r) for m, r in rows.items()), cells("all", total)]
    if markdown:
        print("| " + " | ".join(HEADER) + " |")
        print("|---" + "|---:" * (len(HEADER) - 1) + "|")
        for line in table[1:]:
            line[0] = f"**{line[0]}**" if line[0] == "all" else f"`{line[0]}`"
            print("| " + " | ".join(line) + " |")
        return
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    for line in table:
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))))


def report(markdown: bool, show_equivalent: bool) -> Row:
    mutants = read_results()
    equivalents = load_equivalents()
    stale, survivors = [], []
    confirmed: set[str] = set()
    for mutant in mutants:
        if mutant.status != SURVIVED:
            continue
        entry = equivalents.get(mutant.name)
        diff = mutant_diff(mutant)
        if entry is not None and entry["change"] == changed_lines(diff):
            confirmed.add(mutant.name)
            if show_equivalent:
                print(f"equivalent {mutant.name}: {entry['why']}\n{diff}\n")
            continue
        if entry is not None:
            stale.append(mutant.name)
        survivors.append((mutant, diff))
    rows = {module: Row() for module in mutated_modules()}
    total = Row()
    for mutant in mutants:
        rows[mutant.module].add(mutant.status, mutant.name in confirmed)
        total.add(mutant.status, mutant.name in confirmed)

    for mutant, diff in survivors:
        note = " (stale equivalent entry: the mutant changed)" if mutant.name in stale else ""
        print(f"# {mutant.name}: survived{note}")
        print(diff, end="\n\n")
    gone = sorted(set(equivalents) - confirmed - set(stale))
    for name in gone:
        print(f"equivalent entry {name} no longer survives or no longer exists: remove it from {EQUIVALENTS.name}")
    other = Counter(m.status for m in mutants if m.status not in (KILLED, TIMEOUT, SURVIVED))
    if other:
        print("not killed for another reason:", dict(other))
    print()
    print_table(rows, total, markdown)
    print()
    print(f"killed {total.killed + total.timeout} of {total.mutants} mutants ({100 * total.share:.1f} %; timeouts "
          f"count as killed); {total.equivalent} survivors judged equivalent ({EQUIVALENTS.name}), without them "
          f"{100 * total.share_without_equivalents:.1f} %; {len(survivors)} survivors not judged equivalent "
          f"(listed above). Target ≥ {100 * TARGET:.0f} % killed: "
          f"{'met' if total.share >= TARGET else 'not met'} raw, "
          f"{'met' if total.share_without_equivalents >= TARGET else 'not met'} without equivalents.")  # fmt: skip
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="mutmut's parallel test processes")
    parser.add_argument("--report", action="store_true", help="only report the last run")
    parser.add_argument("--rerun", nargs="+", metavar="MUTANT", help="copy the project again, re-run these (globs)")
    parser.add_argument("--show", metavar="MUTANT", help="print one mutant's diff and status")
    parser.add_argument("--markdown", action="store_true", help="the table as markdown (docs/mutation.md)")
    parser.add_argument("--show-equivalent", action="store_true", help="also print the equivalents and why")
    args = parser.parse_args()
    if args.show:
        mutant = next((m for m in read_results() if m.name == args.show), None)
        if mutant is None:
            raise SystemExit(f"no mutant {args.show}")
        print(f"# {mutant.name}: {mutant.status}\n{mutant_diff(mutant)}")
        return
    if not args.report:
        stage(fresh=not args.rerun)
        seconds = run_mutmut(args.jobs, args.rerun or [])
        print(f"\nmutmut ran {seconds / 60:.1f} min with {args.jobs} processes")
    report(args.markdown, args.show_equivalent)


if __name__ == "__main__":
    main()
