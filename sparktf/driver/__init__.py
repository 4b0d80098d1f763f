"""The driver side of a cluster: one attempt, node states, feed jobs, streaming, Spark."""
