"""`python -m bench`: this registry against Distribution, interleaved, in one run.

For each scenario both servers start on fresh, empty data directories (or, for the
s3-* scenarios, fresh buckets on one local moto S3 server) on random loopback ports;
each round measures the reference and then ours, and the table shows the median of
the rounds (the maximum, for memory peaks).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from .procs import REPO_ROOT, SIDES, S3Endpoint, Side
from .report import Result, table
from .scale import scale_scenarios
from .scenarios import MiB, Context, Scenario, Sizes, all_scenarios
from .storegen import StoreSpec


def every_scenario(sizes: Sizes) -> list[Scenario]:
    return all_scenarios(sizes) + scale_scenarios(sizes)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_scenario(scenario: Scenario, sides: dict[str, Side], ctx: Context, rounds: int,
                 results: dict[str, Result]) -> None:
    states: dict[str, Any] = {}
    rounds = min(rounds, scenario.max_rounds or rounds)
    try:
        if not scenario.fresh_per_round:
            for name, side in sides.items():
                if scenario.needs_servers:
                    side.start(scenario.our_config, counted=scenario.counts_s3_calls)
                states[name] = scenario.setup(side, ctx)
        for index in range(rounds):
            for name, side in sides.items():  # interleaved: reference, then ours, every round
                if scenario.fresh_per_round:
                    if scenario.needs_servers:
                        side.start(scenario.our_config, counted=scenario.counts_s3_calls)
                    states[name] = scenario.setup(side, ctx)
                values = scenario.measure(side, states[name], index, ctx)
                if scenario.fresh_per_round:
                    side.stop()
                for key, value in values.items():
                    results[key].samples[name].append(value)
                shown = ", ".join(f"{key} {value:,.1f}" for key, value in values.items())
                log(f"  round {index + 1}/{rounds} {name:>9}: {shown}")
    finally:
        for side in sides.values():
            side.stop()
        scenario.finish()


class Servers:
    """The two sides per storage backend; the S3 endpoint (moto) starts with the first S3 scenario."""

    def __init__(self, workdir: Path, cached_reference: bool) -> None:
        self.workdir = workdir
        self.cached_reference = cached_reference
        self.s3: S3Endpoint | None = None
        self.sides: dict[str, dict[str, Side]] = {}

    def for_backend(self, backend: str) -> dict[str, Side]:
        if backend not in self.sides:
            s3 = None
            if backend == "s3":
                self.s3 = S3Endpoint(self.workdir / "moto")
                try:
                    s3 = self.s3.start()
                except BaseException:
                    self.s3.stop()
                    raise
            self.sides[backend] = {name: Side(name, self.workdir / f"servers-{backend}",
                                              cached_reference=self.cached_reference, s3=s3) for name in SIDES}
        return self.sides[backend]

    def stop(self) -> None:
        for sides in self.sides.values():
            for side in sides.values():
                side.stop()
        if self.s3 is not None:
            self.s3.stop()


def metadata(sizes: Sizes, rounds: int, reference_cache: bool) -> dict[str, Any]:
    def output(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = output("git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD")
    dirty = bool(output("git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "registry", "storage_backends"))
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "ours": commit + (" + uncommitted changes" if dirty else ""),
        "reference": output("docker-registry", "--version"),
        "moto": output(sys.executable, "-c", "import moto; print(moto.__version__)"),
        "reference_blobdescriptor_cache": reference_cache,
        "rounds": rounds,
        "sizes": dataclasses.asdict(sizes),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = [s.name for s in every_scenario(Sizes())]
    opt_in = [s.name for s in every_scenario(Sizes()) if s.opt_in]
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and 1 round: a smoke check, not a result")
    parser.add_argument("--only", action="append", default=[], metavar="SCENARIO",
                        help=f"run only these scenarios (repeatable or comma-separated): {', '.join(names)}")
    parser.add_argument("--scale", action="store_true",
                        help=f"run the opt-in scale scenarios instead ({', '.join(opt_in)}): about an hour, "
                             "30 GB of temporary space")
    parser.add_argument("--soak-minutes", type=float,
                        help="how long the soak scenario's traffic runs (default 10; 1/3 with --quick)")
    parser.add_argument("--rounds", type=int, help="rounds per scenario (default 3; 1 with --quick)")
    parser.add_argument("--gc-s3-manifests", type=int, metavar="N",
                        help="the gc-s3 scenario's store: N manifests in N/2 repositories (default 10,000 in 10,000; "
                             "Distribution's collector needs most of an hour for those on moto)")
    parser.add_argument("--json", metavar="FILE", help="also write the results and samples as JSON")
    parser.add_argument("--no-reference-cache", action="store_true",
                        help="run Distribution without its in-memory blob descriptor cache (on in its shipped config)")
    args = parser.parse_args(argv)
    args.only = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    unknown = sorted(set(args.only) - set(names))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.gc_s3_manifests is not None and args.gc_s3_manifests < 2:
        parser.error("--gc-s3-manifests must be at least 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.soak_minutes is not None:
        sizes = dataclasses.replace(sizes, soak_seconds=args.soak_minutes * 60)
    if args.gc_s3_manifests is not None:
        n = args.gc_s3_manifests
        sizes = dataclasses.replace(sizes, s3_scale_store=StoreSpec(manifests=n, repositories=n // 2, many_tags=50))
    rounds = args.rounds or (1 if args.quick else 3)
    scenarios = [s for s in every_scenario(sizes)
                 if s.name in args.only or (not args.only and s.opt_in == args.scale)]
    results = {m.key: Result(m) for s in scenarios for m in s.metrics}
    errors: dict[str, str] = {}

    # SIGTERM unwinds like Ctrl-C, so the servers and temp files go in the finally below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="registry-bench-"))
    cached = not args.no_reference_cache
    servers = Servers(workdir, cached)
    started = time.monotonic()
    try:
        ctx = Context(workdir, sizes)
        log(f"bench: {'QUICK smoke check, ' if args.quick else ''}{rounds} round(s), temp dir {workdir}")
        for scenario in scenarios:
            scenario.prepare(ctx)
        if ctx.generated:
            log(f"generated blob files of {', '.join(f'{size // MiB} MiB' for size in ctx.generated)}")
        for scenario in scenarios:
            log(f"[{scenario.name}] {scenario.description}")
            try:
                sides = {n: s for n, s in servers.for_backend(scenario.backend).items() if n in scenario.sides}
                run_scenario(scenario, sides, ctx, rounds, results)
            except Exception as exc:  # one broken scenario must not hide the others' figures
                errors[scenario.name] = f"{type(exc).__name__}: {exc}"
                log(traceback.format_exc())
    finally:
        servers.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    elapsed = time.monotonic() - started
    print()
    meta = metadata(sizes, rounds, cached)
    print(f"registry benchmark: ours ({meta['ours']}) vs Distribution {meta['reference'].split()[-1]} "
          f"(blob descriptor cache {'on' if cached else 'off'}), {rounds} round(s), "
          f"{'median' if rounds > 1 else 'single run'}; {os.cpu_count()} CPUs; {elapsed:.0f} s")
    if args.quick:
        print("QUICK mode: reduced sizes, one round; figures are a smoke check, not results")
    print("ours/ref: higher is better, except for memory (lower is better). It is the median of the rounds' "
          "own ratios\n(each round runs the two back to back); memory rows show the worst round, "
          "and their target is absolute.")
    if any(s.backend == "s3" for s in scenarios):
        print(f"S3 rows: both servers on one local moto {meta['moto']} server (a fresh bucket per server start), "
              "which bounds\nthe figures; 'streamed' runs both with storage.redirect.disable, '307' follows "
              "the redirect to moto (info).")
    print()
    print(table(list(results.values())))
    for scenario in scenarios:
        details = scenario.details()
        if details:
            print(f"\n{details}")
    for name, error in errors.items():
        print(f"\nERROR in scenario {name}: {error}")
    if args.json:
        document = {"meta": meta, "elapsed_seconds": elapsed,
                    "results": [r.as_json() for r in results.values()], "errors": errors}
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nresults written to {args.json}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
