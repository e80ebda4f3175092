"""Data loading, accuracy, benchmarking and reports."""
