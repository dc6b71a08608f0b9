"""Benchmarks of mcmri_fast.ops.data_consistency: provider x shape x mask kind x mode.

The cases (shapes, masks, modes, providers, bytes moved) come from mcmri_fast.workflows.benchmarking. Each case
is built and warmed (compiled, for the `compile` provider) outside the timed rounds and timed by the
`measure` fixture (conftest.py). extra_info holds GB/s, on CUDA the % of the measured copy bandwidth and
the peak memory of one call, the speedup over the reference measured in this session, the device and
the versions.
"""
from mcmri_fast.workflows import benchmarking

cases = benchmarking.data_consistency_cases  # parametrises `case` (benchmarks/conftest.py)


def test_data_consistency(case, bench_device, measure):
    built = benchmarking.build_data_consistency_case(case, bench_device)
    measure(
        built.run,
        setup_s=built.setup_s,
        bytes_moved=built.bytes_moved,
        extra_info=dict(
            shape=str(case.shape),
            shape_note=case.shape.note,
            mask=case.mask,
            input_copies=built.input_copies,
        ),
    )
