import subprocess
import sys

import pytest
import torch

import mcmri_fast
from mcmri_fast import _native
from mcmri_fast.models import model_names
from mcmri_fast.workflows import benchmarking, cli


def test_info_reports_versions_and_backends():
    result = subprocess.run(
        [sys.executable, "-m", "mcmri_fast", "info"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"mcmri_fast {mcmri_fast.__version__}" in out
    assert "torch" in out and "triton" in out
    assert ("mcmri_fast._C loaded" if _native.native_loaded() else "mcmri_fast._C not loaded") in out
    backends_lines = [line for line in out.splitlines() if "backends:" in line]
    assert backends_lines, out
    assert ", ".join(mcmri_fast.available_backends("cpu")) in backends_lines[0]
    models = out.split("\nmodels\n", 1)[1].splitlines()
    assert [line.split()[0] for line in models] == list(model_names())


def test_bench_model_small_prints_interleaved_speedups(capsys):
    args = ["bench", "--model", "fsmnet", "--size", "small", "--min-run-time", "0.01", "--providers", "reference", "cpu", "--modes", "fwd"]
    assert cli.main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("# model fsmnet")
    rows = {line.split()[1]: line.split() for line in lines[3:]}
    assert set(rows) == {"reference", "cpu"} and rows["cpu"][3].endswith("x")
    assert cli.main(["bench", "--model", "unet", "--size", "small"]) == 2
    _assert_one_line_error(capsys.readouterr().err, "--model unet: no benchmark cases; models with cases: dunsa, fsmnet, ima, manet, mario")


def test_bench_model_reports_the_activations_kept_for_backward(capsys):
    args = ["bench", "--model", "fsmnet", "--size", "small", "--min-run-time", "0.01", "--providers", "reference", "cpu",
            "--modes", "fwd+bwd"]
    assert cli.main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].split()[-2:] == ["kept", "MB"]
    kept = {line.split()[1]: float(line.split()[-1]) for line in lines[3:]}
    # the fused ops keep less for backward than the reference ops (the attention's projections, say)
    assert 0 < kept["cpu"] < kept["reference"]


def test_bench_reports_a_failed_case_in_one_line(monkeypatch, caplog):
    build = benchmarking.build_model_case

    def failing_cpu(case, device, **kwargs):
        if case.provider == "cpu":
            raise RuntimeError("\nthe cause\nand a long story")
        return build(case, device, **kwargs)

    monkeypatch.setattr(benchmarking, "build_model_case", failing_cpu)
    args = ["bench", "--model", "fsmnet", "--size", "small", "--min-run-time", "0.01", "--providers", "reference", "cpu",
            "--modes", "fwd"]
    case_id = benchmarking.model_cases("small", ["cpu"], ["fwd"])[0].id
    for verbose in (False, True):
        caplog.clear()
        assert cli.main((["-v"] if verbose else []) + args) == 1
        failures = [record.getMessage() for record in caplog.records if "failed" in record.getMessage()]
        assert failures[:1] == [f"case {case_id} failed: RuntimeError: the cause"]
        # the traceback only under -v
        assert any(record.exc_info for record in caplog.records) == verbose


def test_kept_for_backward_counts_each_saved_storage_once():
    x = torch.randn(1000, requires_grad=True)

    def run():
        y = x.exp()  # keeps its output: 4000 bytes
        (y * y).sum().backward()  # keeps y (already counted) twice

    assert benchmarking.kept_for_backward(run) == 4000
    with torch.no_grad():
        assert benchmarking.kept_for_backward(lambda: x.exp()) == 0


def test_bench_model_shapes_select_cases(capsys):
    args = ["bench", "--model", "fsmnet", "--size", "small", "--min-run-time", "0.01", "--providers", "cpu",
            "--modes", "fwd", "--shapes", "1x1x32x32"]
    assert cli.main(args) == 0
    assert "1x1x32x32" in capsys.readouterr().out
    assert cli.main(args[:-2] + ["--shapes", "1x1x64x64"]) == 2
    _assert_one_line_error(capsys.readouterr().err, "none of the small shapes of fsmnet: 1x1x32x32")
    with pytest.raises(SystemExit) as exit_info:  # argparse's type check
        cli.main(args[:-2] + ["--shapes", "1x1x32"])
    assert exit_info.value.code == 2
    _assert_one_line_error(capsys.readouterr().err, "expected four positive sizes BxCxHxW")
    assert cli.main(["bench", "--size", "small", "--shapes", "1x1x32x32"]) == 2
    _assert_one_line_error(capsys.readouterr().err, "use it with --model")


def test_bench_small_prints_table_with_speedup(capsys):
    assert cli.main(["bench", "--size", "small", "--min-run-time", "0.01", "--providers", "reference", "cpu"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].startswith("# data_consistency: device:")
    header = lines[1].split()
    assert header[:4] == ["shape", "mask", "mode", "provider"] and "speedup" in header
    rows = [line.split() for line in lines[3:]]
    providers = ["reference"] + (["cpu"] if _native.native_loaded() else [])
    cases = benchmarking.data_consistency_cases("small", providers)
    assert [row[3] for row in rows] == [case.provider for case in cases]
    speedup = header.index("speedup") - 1  # "median ms" is two words in the header, one cell in a row
    for row in rows:
        assert float(row[speedup - 1]) > 0  # median ms
        assert row[speedup].endswith("x") and float(row[speedup][:-1]) > 0
        if row[3] == "reference":
            assert row[speedup] == "1.00x"


def _assert_one_line_error(err: str, message: str) -> None:
    """What the README promises for bad input: one line, `mcmri: error: ...`, no usage, no traceback."""
    assert err.startswith("mcmri: error:") and err.endswith("\n") and err.count("\n") == 1, err
    assert message in err, err


def test_bench_rejects_unknown_provider(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--providers", "nonsense"])
    assert exit_info.value.code == 2
    _assert_one_line_error(capsys.readouterr().err, "invalid choice: 'nonsense'")


def test_bench_unknown_model_is_one_line(capsys):
    assert cli.main(["bench", "--model", "nosuch"]) == 2
    _assert_one_line_error(capsys.readouterr().err, "unknown model 'nosuch'; the registered models are: ")
    result = subprocess.run([sys.executable, "-m", "mcmri_fast", "bench", "--model", "nosuch"], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 2 and result.stdout == ""
    _assert_one_line_error(result.stderr, "nosuch")


def test_quiet_and_verbose_go_before_or_after_the_command():
    parser = cli._parser()
    for argv, quiet, verbose in ((["demo"], False, False), (["-q", "demo"], True, False), (["demo", "-q"], True, False),
                                 (["bench", "--quiet"], True, False), (["-v", "info"], False, True), (["info", "-v"], False, True)):
        args = parser.parse_args(argv)
        assert (args.quiet, args.verbose) == (quiet, verbose), argv


def test_help_describes_what_the_commands_do(capsys):
    for argv in (["--help"], ["bench", "-h"], ["info", "-h"], ["demo", "-h"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 0
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        if argv == ["--help"]:
            assert "--model, a whole network" in text and "time the models" in text and "-q, --quiet" in text
            assert "`mcmri: error: ...`, and exit status 2" in text
        elif argv[0] == "bench":
            assert "data_consistency" in text and "--model NAME a whole network" in text and "kept MB" in text
        elif argv[0] == "info":
            assert "instruction set" in text and "registered models" in text
        else:
            assert "evaluates them against zero-filling" in text and "times the fused data-consistency op" in text


@pytest.mark.parametrize("quiet", [False, True])
def test_bench_progress_shows_on_a_terminal_unless_quiet(monkeypatch, capsys, quiet):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # capsys's stderr stands in for a terminal
    args = ["bench", "--size", "small", "--providers", "reference", "--modes", "fwd", "--masks", "1d", "--min-run-time", "0.001"]
    assert cli.main(["-q", *args] if quiet else args) == 0
    err = capsys.readouterr().err
    assert ("group/s" in err or "group]" in err) != quiet, err
