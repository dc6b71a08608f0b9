"""Command line of mcmri_fast: `python -m mcmri_fast info` and `python -m mcmri_fast bench`.

info   what was built and what can run: versions of mcmri_fast, torch, triton and CUDA, the native
       extension, the devices and the backends available on each, a forced backend.
bench  times the data-consistency benchmark cases of mcmri_fast.benchmarking (the same cases as the
       pytest-benchmark suite in benchmarks/) and prints a table with the speedup over the reference.

Results go to stdout; progress and diagnostics go to stderr through logging.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
from collections.abc import Sequence

import torch

logger = logging.getLogger(__name__)

def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    logging.getLogger("mcmri_fast").setLevel(level)
    if args.command == "info":
        return _info(args)
    if args.command == "bench":
        return _bench(args, parser)
    parser.print_help(sys.stderr)
    return 2


def _parser() -> argparse.ArgumentParser:
    from . import benchmarking

    parser = argparse.ArgumentParser(prog="python -m mcmri_fast", description=__doc__.split("\n\n")[0])
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug diagnostics on stderr")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="warnings only on stderr (no progress)")
    commands = parser.add_subparsers(dest="command", metavar="{info,bench}")

    commands.add_parser("info", help="versions, native extension, devices and available backends")

    bench = commands.add_parser(
        "bench",
        help="time the data-consistency op per provider and print a table",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Times mcmri_fast.ops.data_consistency for each provider, shape, mask kind and mode\n"
            "(the cases of mcmri_fast.benchmarking, as in benchmarks/bench_data_consistency.py).\n\n"
            "Providers: reference (eager pure PyTorch), compile (torch.compile of the reference,\n"
            "compiled before timing), and the fused backends cpu, triton, cuda. The reference is\n"
            "always measured: the speedup column is its median over the provider's, both measured in\n"
            "this run, interleaved: blocks of calls of each provider of a case alternate, so a\n"
            "shared machine's slow spells hit all providers alike. `compile` compiles each case\n"
            "before timing it (on a 2-core CPU about 10 s for the first case, 1-3 s for each further\n"
            "one). Default: paper sizes, all available providers, both mask kinds and modes: on a\n"
            "2-core CPU 36 cases, a minute or two.\n\n"
            "Columns: median ms per call; speedup over the reference; GB/s of the bytes the op must\n"
            "move at least; on CUDA also % of the measured device copy bandwidth and the peak memory\n"
            "one call allocates beyond its inputs (MB)."
        ),
    )
    bench.add_argument("--size", choices=benchmarking.SIZES, default="paper", help="shape set (default: paper)")
    bench.add_argument(
        "--device", choices=("cpu", "cuda"), default=None, help="device (default: cuda if available, else cpu)"
    )
    bench.add_argument(
        "--providers",
        nargs="+",
        choices=benchmarking.PROVIDERS,
        default=None,
        help="providers to time (default: all available; reference is always timed)",
    )
    bench.add_argument("--modes", nargs="+", choices=benchmarking.MODES, default=None, help="default: all")
    bench.add_argument("--masks", nargs="+", choices=benchmarking.MASK_KINDS, default=None, help="default: all")
    bench.add_argument(
        "--min-run-time",
        type=float,
        default=0.2,
        metavar="S",
        help="seconds of timed calls per provider and case, at least 5 blocks (default: 0.2)",
    )
    bench.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice, usually the cores)"
    )
    return parser


# ---------------------------------------------------------------------------------------------------
# info


def _info(args) -> int:
    import mcmri_fast
    from . import _native, benchmarking
    from .backends import forced_backend

    out = sys.stdout
    print(f"mcmri_fast {mcmri_fast.__version__} ({os.path.dirname(mcmri_fast.__file__)})", file=out)
    print(f"python     {platform.python_version()}", file=out)
    cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build, no CUDA"
    print(f"torch      {torch.__version__} ({cuda})", file=out)
    triton = benchmarking.triton_version()
    print(f"triton     {triton or 'not installed (the triton backend is unavailable)'}", file=out)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("           TRITON_INTERPRET=1: Triton kernels run interpreted on CPU tensors", file=out)

    if _native.native_loaded():
        cuda = (
            f"with CUDA kernels (CUDA {_native.native_cuda_version()})"
            if _native.native_cuda_built()
            else "without CUDA kernels"
        )
        print(f"native     mcmri_fast._C loaded, built {cuda}", file=out)
    else:
        print(f"native     mcmri_fast._C not loaded: {_native.load_error}", file=out)

    try:
        forced = forced_backend()
        forced = f"MCMRI_FAST_BACKEND={forced}" if forced else "none (automatic choice)"
    except ValueError as exc:  # a bad MCMRI_FAST_BACKEND: info should say so, not crash
        forced = f"MCMRI_FAST_BACKEND is invalid: {exc}"
    print(f"forced     {forced}", file=out)

    print("devices", file=out)
    cpu_name = benchmarking.device_name("cpu")
    print(f"  cpu      {cpu_name}, {torch.get_num_threads()} threads", file=out)
    print(f"           backends: {', '.join(mcmri_fast.available_backends('cpu'))}", file=out)
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            device = torch.device("cuda", index)
            props = torch.cuda.get_device_properties(device)
            print(
                f"  cuda:{index}   {props.name}, sm_{props.major}{props.minor}, "
                f"{props.total_memory / 2**30:.0f} GiB",
                file=out,
            )
            print(f"           backends: {', '.join(mcmri_fast.available_backends(device))}", file=out)
    else:
        print("  cuda     not available", file=out)
    return 0


# ---------------------------------------------------------------------------------------------------
# bench


def _bench(args, parser) -> int:
    from . import benchmarking

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    device = torch.device(args.device) if args.device else benchmarking.default_device()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    # The reference is always timed: it is the baseline of the speedup column.
    requested = benchmarking.PROVIDERS if args.providers is None else dict.fromkeys(["reference", *args.providers])
    report_skip = logger.debug if args.providers is None else logger.warning  # warn only for what was asked
    providers = []
    for provider in requested:
        reason = benchmarking.provider_status(provider, device)
        if reason is None:
            providers.append(provider)
        else:
            report_skip("skipping provider %s: %s", provider, reason)
    modes = benchmarking.select(args.modes, benchmarking.MODES, "modes")
    masks = benchmarking.select(args.masks, benchmarking.MASK_KINDS, "masks")
    cases = benchmarking.data_consistency_cases(args.size, providers, masks, modes)

    env = benchmarking.environment(device)
    logger.info(
        "benchmarking data_consistency on %s (%s), %d cases: providers %s",
        device,
        env["device"],
        len(cases),
        ", ".join(providers),
    )
    groups: dict[str, list] = {}
    for case in cases:
        groups.setdefault(case.group, []).append(case)
    rows = []
    failed = 0
    for group in _progress(list(groups.values())):
        built = {}
        for case in group:
            try:
                built[case.provider] = benchmarking.build_data_consistency_case(case, device)
            except Exception:  # one broken case must not discard the others' results: report it, go on
                logger.error("case %s failed", case.id, exc_info=True)
                failed += 1
            else:
                if case.provider == "compile":
                    logger.info("%s: compiled and warmed in %.1f s", case.id, built["compile"].setup_s)
        runs = {provider: b.run for provider, b in built.items()}
        timings = benchmarking.time_interleaved(runs, device, min_run_time=args.min_run_time) if runs else {}
        reference = timings.get("reference")
        for case in group:
            timing = timings.get(case.provider)
            if timing is None:
                rows.append((case, None, None, None))
                continue
            speedup = None if reference is None else reference.median_s / timing.median_s
            throughput = benchmarking.throughput(built[case.provider].bytes_moved, timing.median_s, device)
            rows.append((case, timing, speedup, throughput))
        del built, runs

    print(_header(env, device), file=sys.stdout)
    print(_table(rows, device.type == "cuda"), file=sys.stdout)
    return 1 if failed else 0


def _progress(groups):
    """Yields the case groups, showing progress on stderr (a tqdm bar when tqdm is installed)."""
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional: plain progress lines instead
        tqdm = None
    if tqdm is not None and logger.isEnabledFor(logging.INFO):
        bar = tqdm(groups, unit="group", file=sys.stderr)
        for group in bar:
            bar.set_postfix_str(group[0].group)
            yield group
        return
    for index, group in enumerate(groups, 1):
        logger.info("[%d/%d] %s", index, len(groups), group[0].group)
        yield group


def _header(env: dict, device: torch.device) -> str:
    parts = [f"device: {env['device']} ({device.type})", f"torch {env['torch']}"]
    parts.append(f"triton {env['triton'] or 'not installed'}")
    if device.type == "cuda":
        parts.append(f"CUDA {env['cuda']}, {env['capability']}")
    else:
        parts.append(f"{env['threads']} threads")
    return "# data_consistency: " + "; ".join(parts)


def _table(rows, cuda: bool) -> str:
    columns = ["shape", "mask", "mode", "provider", "median ms", "speedup", "GB/s"]
    if cuda:
        columns += ["% bw", "peak MB"]
    lines = []
    for case, timing, speedup, throughput in rows:
        line = [str(case.shape), case.mask, case.mode, case.provider]
        if timing is None:
            line += ["failed"] + [""] * (len(columns) - 5)
        else:
            line += [
                f"{timing.median_s * 1e3:.3f}",
                "-" if speedup is None else f"{speedup:.2f}x",
                f"{throughput['gb_per_s']:.2f}",
            ]
            if cuda:
                pct = throughput["pct_of_bandwidth"]
                peak = timing.peak_memory_bytes
                line += ["-" if pct is None else f"{pct:.1f}", "-" if peak is None else f"{peak / 2**20:.1f}"]
        lines.append(line)
    widths = [max(len(columns[i]), *(len(line[i]) for line in lines)) if lines else len(columns[i]) for i in range(len(columns))]
    numeric = set(range(4, len(columns)))

    def fmt(cells):
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([fmt(columns), fmt(["-" * w for w in widths]), *map(fmt, lines)])
