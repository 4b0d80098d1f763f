#!/bin/sh
# The Python install steps of docker/Dockerfile, in the order it runs them. The Dockerfile runs
# this script, and tests/package/test_wheel.py runs the same script in a fresh venv, so the
# image's install is exercised even where no Docker engine runs.
#
#   docker/install.sh VENV WHEEL [EXTRAS]
#
# VENV: the virtual environment to create (it must not exist). WHEEL: the sparktf wheel.
# EXTRAS: the extras to install with it (default: examples). Every package version comes from
# constraints.txt beside this script; pip settings come from PIP_* variables (the Dockerfile
# sets PIP_NO_CACHE_DIR, the tests use pip's cache).
set -eu

venv=${1:?usage: install.sh VENV WHEEL [EXTRAS]}
wheel=${2:?usage: install.sh VENV WHEEL [EXTRAS]}
extras=${3:-examples}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3.11}

if [ -e "$venv" ]; then
    echo "install.sh: $venv exists; give a new directory" >&2
    exit 2
fi
case "$wheel" in
    *.whl) ;;
    *) echo "install.sh: $wheel is not a wheel (build one: python -m build)" >&2; exit 2 ;;
esac

"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --disable-pip-version-check --upgrade "pip==26.3"
"$venv/bin/python" -m pip install --disable-pip-version-check \
    --constraint "$here/constraints.txt" "$wheel[$extras]"
# A dependency conflict fails the build here, not at the first job.
"$venv/bin/python" -m pip check
# Importing prints no warning (pyspark warns for pandas >= 3 at the first DataFrame job;
# require_minimum_pandas_version is that check).
cd /
"$venv/bin/python" -W error -c "
import sparktf, pyspark, tensorflow, tf_keras
from pyspark.sql.pandas.utils import require_minimum_pandas_version, require_minimum_pyarrow_version
require_minimum_pandas_version()
require_minimum_pyarrow_version()
print('sparktf', sparktf.__version__, 'pyspark', pyspark.__version__, 'tensorflow', tensorflow.__version__)
"
