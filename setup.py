"""The optional compiled accelerator (``aiologsinks._speedups``).

Everything else is in pyproject.toml. Where no compiler is available the build of the
extension fails quietly (``optional=True``) and the package runs on its pure-Python
path, which is complete.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "aiologsinks._speedups",
            ["aiologsinks/_speedups.c"],
            depends=["aiologsinks/_shortest.h"],
            optional=True,
        ),
    ]
)
