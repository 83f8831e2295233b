"""Package discovery; every other setting is in pyproject.toml.

Packages are found, never listed, so a new sub-package or backend plugin cannot be left out of a
wheel: every package under crossnn/, every package under backends/ (each installs as its own
top-level package: crossnn_numpy, crossnn_torch, crossnn_tensorflow, ...), and examples/, which
installs as crossnn.examples with its spec files (package data in pyproject.toml). pyproject.toml
alone cannot say this: its `packages.find` names packages after their folders, and examples/ must
install under another name.
"""

from setuptools import find_namespace_packages, setup

# namespace discovery: a folder of modules is a package even without an __init__.py (crossnn/bench)
NOT_CODE = ["*__pycache__", "*.egg-info"]
core = find_namespace_packages(include=["crossnn", "crossnn.*"], exclude=NOT_CODE)
plugins = find_namespace_packages("backends", exclude=NOT_CODE)
setup(packages=[*core, *plugins, "crossnn.examples"],
      package_dir={"crossnn.examples": "examples", **{name: "backends/" + name.replace(".", "/") for name in plugins}})
