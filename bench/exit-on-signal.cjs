// Preload for profiling runs (BENCH_CPU_PROF): node writes --cpu-prof profiles only on a normal
// exit, so turn SIGTERM/SIGINT into process.exit(0). Not used for normal benchmark runs.
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
