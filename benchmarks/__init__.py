"""Benchmarks, each a module runnable as ``python -m benchmarks.<name>`` that prints a table
and writes ``benchmarks/results/<name>.md``. Not tests: nothing here asserts timings."""
