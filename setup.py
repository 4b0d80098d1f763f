from setuptools import find_packages, setup

setup(
    name="sparktf",
    version="0.1.0",
    description="Distributed TensorFlow on Apache Spark (TensorFlowOnSpark-compatible API)",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["sparktf", "sparktf.*"]),
    python_requires=">=3.11",
    install_requires=[
        "pyspark>=4.0",
        # The full `tensorflow` distribution, not `tensorflow-cpu`: tf-keras
        # depends on `tensorflow`, and both installed overwrite each other's files.
        "tensorflow>=2.21,<2.22",
        "tf-keras>=2.21,<2.22",
        "numpy",
        "pyarrow>=14",
        "hdfs",
        "tensorboard",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-timeout", "hypothesis", "ruff", "mlxtend", "pandas",
                 "moto[server]"],
        "examples": ["mlxtend", "pandas"],
    },
    license="Apache-2.0",
)
