"""The miniengine benchmark suite: ``python -m benchmarks [--quick] [--only W1,W2] [--repeat N]``.

Each workload runs in a fresh subprocess with its own temporary database; the parent collects the
medians, compares them with the targets of ``DESIGN.md`` and writes a table and a JSON file.
Workloads are declared in :mod:`benchmarks.workloads` (one module each, one registry line).
"""
