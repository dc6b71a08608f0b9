"""What the `mcmri` command runs, on the library's ops, data and models: training (`train`),
evaluation and reconstruction files (`evaluate`), the demo (`demo`), the benchmark cases and timers
(`benchmarking`) and the command line itself (`cli`); `common` holds what they share.

Nothing is imported here: `import mcmri_fast.workflows.cli` stays as light as the command needs."""
