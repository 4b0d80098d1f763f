# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Hadoop's mini clusters for the HDFS and YARN tests and Spark's s3a:// (tests/hadoop/pom.xml,
# tests/s3a/pom.xml): jars fetched by Maven
# into this cache, outside the source tree; the tests fill it themselves if it is empty.
HADOOP_CACHE ?= $(HOME)/.cache/sparktf-hadoop
export SPARKTF_HADOOP_CACHE := $(HADOOP_CACHE)
# Kafka's broker and Spark's Kafka source for the streaming tests (tests/kafka/*.xml), the same way.
KAFKA_CACHE ?= $(HOME)/.cache/sparktf-kafka
export SPARKTF_KAFKA_CACHE := $(KAFKA_CACHE)

.PHONY: test unit integration lint demo bench clean hadoop kafka fuzz

$(STAMP): setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,examples]'
	touch $(STAMP)

test: $(STAMP) lint
	$(PY) -m pytest --durations=15 tests

lint: $(STAMP)
	$(VENV)/bin/ruff check --select E,F,W --line-length 100 sparktf tests benchmarks examples

unit: $(STAMP)
	$(PY) -m pytest tests/unit

# The servers' fuzz tests with 5,000 hypothesis examples per target (make test runs 400).
fuzz: $(STAMP)
	SPARKTF_FUZZ_EXAMPLES=5000 $(PY) -m pytest tests/unit/test_fuzz_servers.py

integration: $(STAMP)
	$(PY) -m pytest tests/integration

hadoop: $(STAMP)
	$(PY) -c 'import sys; sys.path.insert(0, "tests"); from servers.hadoop import prepare; print(prepare())'
	$(PY) -c 'import sys; sys.path.insert(0, "tests"); from servers import s3a; print(len(s3a.spark_jars()))'

kafka: $(STAMP)
	$(PY) -c 'import sys; sys.path.insert(0, "tests"); from servers import kafka; \
		print(kafka.broker_jars(), kafka.spark_jars())'

demo: $(STAMP)
	$(PY) examples/mnist/demo.py

bench: $(STAMP)
	$(PY) benchmarks/feed_throughput.py
	$(PY) benchmarks/inference_throughput.py
	$(PY) benchmarks/feed_encryption.py
	$(PY) benchmarks/predict_throughput.py
	$(PY) benchmarks/streaming_throughput.py
	$(PY) benchmarks/cached_epochs.py

clean:
	rm -rf $(VENV) build *.egg-info
