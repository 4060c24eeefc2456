"""Performance benchmarks: each measures Concord beside a ceiling measured in the same run."""
