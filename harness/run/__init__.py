"""Running planned cases: the run session (run folder, resume), executors (in-process, isolated, Ray), merging shards."""
