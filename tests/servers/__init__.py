"""Real storage servers for tests: WebHDFS (:mod:`servers.webhdfs`) and moto S3 fixtures."""
