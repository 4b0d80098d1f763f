"""The node side: launcher (in the Spark task), supervisor, node process and ``ctx``."""
