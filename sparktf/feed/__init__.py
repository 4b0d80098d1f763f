"""SPARK-mode feeding: sender (feeding task), receiver (node), DataFeed and tf.data."""
