"""The `mcmri` command (also `python -m mcmri_fast`): multi-contrast MRI reconstruction with fused
ops: train, evaluate and time the registered models.

info   what was built and what can run: versions of mcmri_fast, torch, triton and CUDA, the native
       extension and the CPU instruction sets of each layer, each op's cpu path, the devices and the
       backends available on each, a forced backend, the registered models.
train  trains a registered model (mcmri_fast.models) on a dataset: the options of
       mcmri_fast.workflows.train.TrainConfig as flags and/or a JSON config file; checkpoints,
       metrics.jsonl and config.json in the run folder; resumable; multi-GPU / multi-node under torchrun.
eval   per-volume metrics (CSV, JSON summary) and PNG panels of a model or checkpoint on a split.
recon  writes a checkpoint's reconstructions of a split as fastMRI-style HDF5 files.
bench  times the data-consistency op's benchmark cases of mcmri_fast.workflows.benchmarking (the
       cases of the pytest-benchmark suite in benchmarks/) per provider, with the speedup over the
       reference; with --model NAME, a whole network's forward or training step on the fused backends
       against the reference ops.
demo   the main job on the builtin dataset, no arguments needed: trains the registered models,
       compares them with zero-filling, writes the figures, times the fused ops (see
       mcmri_fast.workflows.demo).

Results go to stdout; progress bars (on a terminal) and diagnostics go to stderr; -q leaves warnings
and errors only. Bad input (an unknown model or option, a missing or corrupt file, a checkpoint of
another model, CUDA asked for without CUDA) ends with one line, `mcmri: error: ...`, and exit status
2, not a traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


class _Parser(argparse.ArgumentParser):
    """argparse with the command's one-line errors: `mcmri: error: ...` and exit status 2, no usage."""

    def error(self, message: str):
        self.exit(2, f"mcmri: error: {message} (`{self.prog} -h` lists the options)\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    logging.getLogger("mcmri_fast").setLevel(level)
    commands = {"info": _info, "bench": _bench, "train": _train, "eval": _eval, "recon": _recon, "demo": _demo}
    if args.command not in commands:
        parser.print_help(sys.stderr)
        return 2
    try:
        return commands[args.command](args)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        # What users get wrong (names, files, options) is reported in one line; a bug elsewhere still
        # shows its traceback, which -v keeps for these too.
        if args.verbose:
            logger.exception("mcmri %s failed", args.command)
        print(f"mcmri: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mcmri: interrupted", file=sys.stderr)
        return 130


def _report_failed_case(case_id: str, error: Exception) -> None:
    """A benchmark case that could not be built or run, in one line (an Inductor failure's traceback
    runs to a hundred lines); -v adds the traceback."""
    message = next((line for line in str(error).splitlines() if line.strip()), "")
    logger.error("case %s failed: %s%s", case_id, type(error).__name__, f": {message}" if message else "")
    logger.debug("traceback of case %s:", case_id, exc_info=error)


def _parser() -> argparse.ArgumentParser:
    from . import benchmarking

    parser = _Parser(
        prog="mcmri", description=__doc__.split("\n\n")[0].replace("`mcmri` command", "mcmri command"),
        epilog="`mcmri COMMAND -h` lists a command's options. Bad input ends with one line, `mcmri: error: ...`, "
        "and exit status 2.",
    )
    _add_verbosity(parser, default=False)
    commands = parser.add_subparsers(dest="command", metavar="{info,train,eval,recon,bench,demo}")
    verbosity = _Parser(add_help=False)
    _add_verbosity(verbosity, default=argparse.SUPPRESS)  # after the command too; absent: the global flag's value

    commands.add_parser("info", parents=[verbosity], help="versions, native extension, CPU paths, devices, backends, models",
                        description="What was built and what can run: the versions of mcmri_fast, Python, torch and "
                        "triton, the native extension, the CPU instruction set of each layer and each op's cpu path, "
                        "a forced backend, the devices and the backends each can use, the registered models.")

    bench = commands.add_parser(
        "bench",
        parents=[verbosity],
        help="time the fused ops (or, with --model, a whole network) against the reference",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Times mcmri_fast.ops.data_consistency for each provider, shape, mask kind and mode (the\n"
            "cases of mcmri_fast.workflows.benchmarking, as in benchmarks/bench_data_consistency.py),\n"
            "or with --model NAME a whole network (a forward, fwd, or a training step, fwd+bwd) on\n"
            "each provider: the fused backends against the reference ops.\n\n"
            "Providers: reference (eager pure PyTorch), compile (torch.compile of the reference,\n"
            "compiled before timing), and the fused backends cpu, triton, cuda. The reference is\n"
            "always measured: the speedup column is its median over the provider's, both measured in\n"
            "this run, interleaved: blocks of calls of each provider of a case alternate, so a\n"
            "shared machine's slow spells hit all providers alike. `compile` compiles each case\n"
            "before timing it (on a 2-core CPU about 10 s for the first case, 1-3 s for each further\n"
            "one). Default: paper sizes, all available providers, both mask kinds and modes: on a\n"
            "2-core CPU 36 data-consistency cases, a minute or two.\n\n"
            "Columns of the op table: median ms per call; speedup over the reference; GB/s of the\n"
            "bytes the op must move at least; on CUDA also % of the measured device copy bandwidth\n"
            "and the peak memory one call allocates beyond its inputs (MB). With --model: median ms\n"
            "per step, speedup, peak MB (CUDA) and, for fwd+bwd, the activations kept for the\n"
            "backward (kept MB, any device)."
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
    bench.add_argument(
        "--model",
        default=None,
        metavar="NAME",
        help="time this registered model instead (whole network: fused backends vs the reference ops, "
        "the shapes of mcmri_fast.workflows.benchmarking.MODEL_SHAPES; a paper-size CPU step takes tens of "
        "seconds); "
        "for fwd+bwd also the activations kept for backward (kept MB, any device)",
    )
    bench.add_argument(
        "--shapes",
        nargs="+",
        type=_shape,
        default=None,
        metavar="BxCxHxW",
        help="with --model: only these input shapes of the size set, e.g. 1x1x240x240 (default: all)",
    )
    _add_workflow_commands(commands, verbosity)
    return parser


def _add_verbosity(parser: argparse.ArgumentParser, default) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", default=default,
                       help="debug diagnostics on stderr, and the traceback of an error")
    group.add_argument("-q", "--quiet", action="store_true", default=default,
                       help="only warnings and errors on stderr: no progress bars or progress lines")


# ---------------------------------------------------------------------------------------------------
# info


def _info(args) -> int:
    import mcmri_fast
    from .. import _native
    from ..backends import forced_backends
    from . import benchmarking

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
    _print_cpu_paths(out)

    try:
        forced = forced_backends()
        forced = f"MCMRI_FAST_BACKEND={','.join(forced)}" if forced else "none (automatic choice)"
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

    from .. import models

    print("models", file=out)
    width = max(map(len, models.model_names()))
    for name in models.model_names():
        print(f"  {name:<{width}}  {models.get_model_spec(name).description}", file=out)
    return 0


def _print_cpu_paths(out) -> None:
    """The CPU's instruction sets as each layer uses them, and each op's cpu path on this machine."""
    from .. import cpu_isa

    switches = ", ".join(f"{k}={v}" for k, v in cpu_isa.isa_switches().items() if v is not None) or "none set"
    try:
        kernels = cpu_isa.kernel_isa() or "none (no native extension)"
    except ValueError as exc:  # a bad MCMRI_FAST_CPU_ISA: say so, the rest of info still prints
        print(f"cpu isa    {exc}", file=out)
        return
    print(f"cpu isa    mcmri_fast kernels: {kernels}; ATen: {cpu_isa.aten_capability()}; caps: {switches}", file=out)
    print("cpu paths  (float32 unless stated)", file=out)
    paths = cpu_isa.cpu_fast_paths()
    width = max(len(op) for op, _ in paths)
    for op, path in paths:
        print(f"  {op:<{width}}  {path}", file=out)


# ---------------------------------------------------------------------------------------------------
# bench


def _bench(args) -> int:
    from . import benchmarking

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available")
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
    if args.model is not None:
        return _bench_model(args, device, providers, modes)
    if args.shapes is not None:
        raise ValueError("--shapes selects model shapes: use it with --model")
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
            except Exception as error:  # one broken case must not discard the others' results: report it, go on
                _report_failed_case(case.id, error)
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


def _shape(text: str) -> tuple[int, ...]:
    """An input shape written BxCxHxW (argparse type of --shapes)."""
    try:
        shape = tuple(int(size) for size in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected four positive sizes BxCxHxW, e.g. 1x1x240x240, got {text!r}")
    return shape


def _bench_model(args, device: torch.device, providers: list[str], modes: tuple[str, ...]) -> int:
    """`bench --model NAME`: each case's providers timed interleaved; a table of ms and speedups."""
    from . import benchmarking
    from ..models import get_model_spec

    get_model_spec(args.model)  # an unknown name: UnknownModelError, listing the registered models
    cases = benchmarking.model_cases(args.size, providers, modes, models=(args.model,))
    if not cases:
        known = sorted({model for model, _, _ in benchmarking.MODEL_SHAPES[args.size]})
        raise ValueError(f"--model {args.model}: no benchmark cases; models with cases: {', '.join(known)}")
    if args.shapes is not None:
        shapes = sorted({case.shape for case in cases})
        cases = [case for case in cases if case.shape in args.shapes]
        if not cases:
            raise ValueError(f"--shapes: none of the {args.size} shapes of {args.model}: "
                         f"{' '.join('x'.join(map(str, shape)) for shape in shapes)}")
    groups: dict[str, list] = {}
    for case in cases:
        groups.setdefault(case.group, []).append(case)
    lines, failed = [], 0
    for group in _progress(list(groups.values())):
        runs = {}
        for case in group:
            try:
                runs[case.provider], setup_s = benchmarking.build_model_case(case, device)
            except Exception as error:  # one broken case must not discard the others' results: report it, go on
                _report_failed_case(case.id, error)
                failed += 1
            else:
                logger.info("%s: built and warmed in %.1f s", case.id, setup_s)
        timings = benchmarking.time_interleaved(runs, device, min_run_time=args.min_run_time, min_rounds=3) if runs else {}
        reference = timings.get("reference")
        for case in group:
            timing = timings.get(case.provider)
            cells = [case.group, case.provider]
            if timing is None:
                cells += ["failed", "", "", ""]
            else:
                speedup = "-" if reference is None else f"{reference.median_s / timing.median_s:.2f}x"
                peak = timing.peak_memory_bytes
                kept = "-"
                if case.mode == "fwd+bwd" and case.provider != "compile":
                    kept = f"{benchmarking.kept_for_backward(runs[case.provider]) / 2**20:.1f}"
                cells += [f"{timing.median_s * 1e3:.1f}", speedup, "-" if peak is None else f"{peak / 2**20:.0f}", kept]
            lines.append(cells)
        del runs
    env = benchmarking.environment(device)
    print(_header(env, device, title=f"model {args.model}"))
    print(benchmarking.format_table(["case", "provider", "median ms", "speedup", "peak MB", "kept MB"], lines, text_columns=2))
    return 1 if failed else 0


def _progress(groups):
    """Yields the case groups, showing progress on stderr: a bar on a terminal, else a log line per
    group (a log file gets lines, not a bar's carriage returns); nothing under -q."""
    from ._progress import progress_bar

    bar = progress_bar(logger.isEnabledFor(logging.INFO), total=len(groups), unit="group")
    try:
        for index, group in enumerate(groups, 1):
            if bar.disable:
                logger.info("[%d/%d] %s", index, len(groups), group[0].group)
            else:
                bar.set_postfix_str(group[0].group)
            yield group
            bar.update(1)
    finally:
        bar.close()


def _header(env: dict, device: torch.device, title: str = "data_consistency") -> str:
    parts = [f"device: {env['device']} ({device.type})", f"torch {env['torch']}"]
    parts.append(f"triton {env['triton'] or 'not installed'}")
    if device.type == "cuda":
        parts.append(f"CUDA {env['cuda']}, {env['capability']}")
    else:
        parts.append(f"{env['threads']} threads")
    return f"# {title}: " + "; ".join(parts)


def _table(rows, cuda: bool) -> str:
    from . import benchmarking

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
    return benchmarking.format_table(columns, lines, text_columns=4)


# ---------------------------------------------------------------------------------------------------
# train, eval, recon, demo


def _key_values(pairs: Sequence[str] | None, option: str) -> dict:
    """KEY=VALUE strings as a dict; values parsed as JSON where they parse (4, 0.5, [4, 8], true), else kept as strings."""
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{option} takes KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _add_data_options(sub: argparse.ArgumentParser, *, training: bool) -> None:
    from ..data.masks import MASK_NAMES
    from .common import DATASET_KINDS

    data = sub.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASET_KINDS, default=None, help="dataset kind (default: builtin)")
    if training:
        data.add_argument("--train-data", default=None, help="training split: a builtin split name or a path (default: train)")
        data.add_argument("--val-data", default=None, help="validation split, or 'none' (default: val)")
    else:
        data.add_argument("--data", default=None, help="the split: a builtin split name or a path (default: test, or the checkpoint's)")
    data.add_argument("--data-root", default=None, help="folder the fastMRI pairs CSV refers to (default: the CSV's folder)")
    data.add_argument("--target", default=None, help="target contrast (default per dataset: builtin t2, ixi t2, brats t2)")
    data.add_argument("--reference", default=None, help="reference contrast (default per dataset: builtin t1, ixi pd, brats t1)")
    data.add_argument("--crop", type=int, default=None, help="centred image crop (fastMRI: 320)")
    data.add_argument("--mask", choices=MASK_NAMES, default=None, help="mask function (default: random)")
    data.add_argument("--acceleration", type=float, default=None, help="mask acceleration R (default 4)")
    data.add_argument("--center-fraction", type=float, default=None, help="fully sampled centre fraction (default 0.08)")
    data.add_argument("--mask-option", action="append", metavar="KEY=VALUE", help="another mask function argument")
    data.add_argument("--misalignment", type=float, default=None, help="σ of the reference's misalignment (default: the model's, 0 but for dunsa)")
    data.add_argument("--noise", type=float, default=None, help="k-space noise, a fraction of the mean intensity (default: the model's, 0 but for manet)")


def _data_options(args, base_mask_kwargs: dict | None) -> dict:
    """The data flags that were given, as TrainConfig / evaluate keyword arguments."""
    options = {}
    for name in ("dataset", "data_root", "target", "reference", "crop", "mask", "misalignment", "noise"):
        value = getattr(args, name)
        if value is not None:
            options[name] = value
    extra = _key_values(args.mask_option, "--mask-option")
    if args.acceleration is not None:
        extra["accelerations"] = [args.acceleration]
    if args.center_fraction is not None:
        extra["center_fractions"] = [args.center_fraction]
    if extra:
        options["mask_kwargs"] = {**(base_mask_kwargs or {}), **extra}
    return options


def _add_run_options(sub: argparse.ArgumentParser) -> None:
    run = sub.add_argument_group("run")
    run.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    run.add_argument("--workers", type=int, default=None, help="DataLoader worker processes (default 0)")
    run.add_argument("--batch-size", type=int, default=None, help="batch size (per process)")


def _add_workflow_commands(commands, verbosity: argparse.ArgumentParser) -> None:
    train = commands.add_parser(
        "train", parents=[verbosity], help="train a registered model (the paper's defaults; resumable; DDP under torchrun)",
        description="Trains a model of mcmri_fast.models. Options not given take the config file's value, "
        "else the paper's default (the model's registry entry). Under torchrun, one process per GPU "
        "(DistributedDataParallel).",
    )
    train.add_argument("--config", default=None, help="a JSON file of TrainConfig options (flags override it)")
    train.add_argument("--model", default=None, help="registered model name (default: unet)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="a model constructor option, e.g. chans=16")
    train.add_argument("--run-dir", default=None, help="run folder (default: runs/<model>-<date>-<time>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--lr", type=float, default=None)
    train.add_argument("--grad-clip", type=float, default=None, help="max gradient norm (0: off; default 1)")
    train.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="mixed precision (default: on CUDA)")
    train.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    train.add_argument("--seed", type=int, default=None)
    train.add_argument("--val-every", type=int, default=None, help="validate every N epochs (default 1)")
    train.add_argument("--log-every", type=int, default=None, help="steps per metrics.jsonl line (default 10)")
    train.add_argument("--max-steps-per-epoch", type=int, default=None, help="a short budget per epoch")
    _add_data_options(train, training=True)
    _add_run_options(train)

    descriptions = {
        "eval": ("score a model or checkpoint on a split: metrics per volume, PNG panels",
                 "Per-volume NMSE, PSNR, SSIM and MAE (fastMRI definitions) of a checkpoint, or of zero_filled, on a "
                 "split (default: the builtin test split, or the checkpoint's data): metrics.csv, summary.json (mean "
                 "± std over the volumes, reconstruction time per slice) and PNG panels in OUT/panels/."),
        "recon": ("write a checkpoint's reconstructions as HDF5 files",
                  "A checkpoint's reconstructions of a split, one fastMRI-style HDF5 file per volume "
                  "(reconstruction float32 [S, H, W])."),
    }
    for name, (help_text, description) in descriptions.items():
        sub = commands.add_parser(name, parents=[verbosity], help=help_text, description=description)
        sub.add_argument("--model", default=None, help="a model name (zero_filled needs no checkpoint) or a checkpoint path")
        sub.add_argument("--checkpoint", default=None, help="a checkpoint (best.pt or last.pt of a run)")
        sub.add_argument("--out", required=True, help="output folder" + (" (or one .h5 file for a one-volume split)" if name == "recon" else ""))
        if name == "eval":
            sub.add_argument("--slices", type=int, nargs="*", default=None, help="slice positions to draw per volume (default: the middle one)")
        _add_data_options(sub, training=False)
        _add_run_options(sub)

    demo = commands.add_parser(
        "demo", parents=[verbosity], help="the main job: train, compare and time the models on the builtin dataset",
        description="Trains each registered model briefly on the builtin dataset (the budget of its registry entry), "
        "evaluates them against zero-filling on the test split, prints the table, writes results.md, results.json, "
        "the runs and the evaluations with their panels to OUT, and times the fused data-consistency op against the "
        "reference. About 10 minutes on 2 CPU cores.",
    )
    demo.add_argument("--out", default="demo", help="output folder (default: ./demo)")
    demo.add_argument("--steps-per-epoch", type=int, default=None, metavar="N",
                      help="cut each training epoch to N steps, for a quicker, rougher run (default: whole epochs)")
    demo.add_argument("--device", default="auto", help="auto (default), cpu or cuda")


def _train(args) -> int:
    from ..data.masks import default_mask_kwargs
    from . import train as training

    if args.resume and not args.run_dir:
        raise ValueError("--resume needs --run-dir (the run to continue)")
    if args.config:
        config = training.TrainConfig.load(args.config).to_dict()
    elif args.resume:  # continue with the run's own options; flags change what a resume may change
        config = training.TrainConfig.load(Path(args.run_dir) / "config.json").to_dict()
    else:
        config = {}
    given = {
        "model": args.model, "run_dir": args.run_dir, "epochs": args.epochs, "lr": args.lr, "grad_clip": args.grad_clip,
        "amp": args.amp, "compile": args.compile, "seed": args.seed, "val_every": args.val_every, "log_every": args.log_every,
        "max_steps_per_epoch": args.max_steps_per_epoch, "device": args.device, "workers": args.workers,
        "batch_size": args.batch_size, "train_data": args.train_data,
    }
    config.update({k: v for k, v in given.items() if v is not None})
    if args.val_data is not None:
        config["val_data"] = None if args.val_data.lower() == "none" else args.val_data
    if args.set:
        config["model_config"] = {**config.get("model_config", {}), **_key_values(args.set, "--set")}
    mask = args.mask or config.get("mask", training.TrainConfig.mask)
    config.update(_data_options(args, config.get("mask_kwargs") or default_mask_kwargs(mask)))
    result = training.train(training.TrainConfig.from_dict(config), resume=args.resume, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one summary (rank 0's)
        print(json.dumps(result, indent=2, default=str))
    return 0


def _eval_kwargs(args) -> tuple[str, dict]:
    model = args.model or args.checkpoint
    if model is None:
        raise ValueError("give --model (a name or a checkpoint) or --checkpoint")
    kwargs = {"checkpoint": args.checkpoint if args.model else None, "data": args.data, "device": args.device or "auto"}
    if args.workers is not None:
        kwargs["workers"] = args.workers
    if args.batch_size is not None:
        kwargs["batch_size"] = args.batch_size
    kwargs.update(_data_options(args, None))
    return model, kwargs


def _eval(args) -> int:
    from .evaluate import evaluate

    model, kwargs = _eval_kwargs(args)
    if args.slices is not None:
        kwargs["slices_to_plot"] = args.slices
    summary = evaluate(model, args.out, progress=not args.quiet, **kwargs)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _recon(args) -> int:
    from .evaluate import reconstruct

    model, kwargs = _eval_kwargs(args)
    for path in reconstruct(model, args.out, progress=not args.quiet, **kwargs):
        print(path)
    return 0


def _demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, steps_per_epoch=args.steps_per_epoch, device=args.device, progress=not args.quiet)
    return 0
