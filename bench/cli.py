"""python -m bench [--quick] [--only SUITE,...] [--repeats N] [--set suite.field=value] [--out DIR]"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections.abc import Sequence
from pathlib import Path

from bench.report import assemble_report, write_section
from bench.runner import SUITE_NAMES, RunContext, load_suite, machine_summary

RESULTS = Path(__file__).resolve().parent / "results"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description="Run camcast's benchmarks and write "
                                "a Markdown report with tables and PNG plots.")
    p.add_argument("--quick", action="store_true", help="a smoke run of every suite in under 2 minutes")
    p.add_argument("--only", default="", help=f"comma-separated suites to run (of: {', '.join(SUITE_NAMES)})")
    p.add_argument("--repeats", type=int, default=None,
                   help="repeats of every point (median and spread); default 3, or 1 with --quick")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SUITE.FIELD=VALUE",
                   help="override a suite setting, e.g. --set mjpeg.clients=1,8 (repeatable)")
    p.add_argument("--out", type=Path, default=None,
                   help="report folder (default: bench/results/<date>, or <date>-quick with --quick)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SUITE_NAMES)
    unknown = [n for n in names if n not in SUITE_NAMES]
    if unknown:
        raise SystemExit(f"bench: unknown suite(s) {', '.join(unknown)}; known: {', '.join(SUITE_NAMES)}")
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3  # --quick is a smoke run: every suite in under 2 minutes
    if args.repeats < 1:
        raise SystemExit("bench: --repeats must be at least 1")
    overrides = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"bench: --set {item!r}: expected SUITE.FIELD=VALUE")
        overrides[key.strip()] = value.strip()
    day = dt.date.today().isoformat()
    out = args.out or RESULTS / (f"{day}-quick" if args.quick else day)
    ctx = RunContext(quick=args.quick, repeats=args.repeats, out_dir=out, overrides=overrides,
                     verbose=not args.quiet)
    header = ("# camcast benchmarks\n\n"
              f"{'Quick smoke run' if args.quick else 'Full run'}: `python -m bench"
              f"{' --quick' if args.quick else ''}`. {machine_summary()}")
    started = time.monotonic()
    for name in names:
        suite = load_suite(name)
        ctx.log(f"suite {name}: {suite.title}")
        write_section(out, suite.run(ctx))
    report = assemble_report(out, SUITE_NAMES, header)
    ctx.log(f"wrote {report} in {time.monotonic() - started:.0f} s")
    return 0
