"""Packaging for liftlearn."""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'__version__ = "([^"]+)"', (HERE / "liftlearn" / "__init__.py").read_text()
).group(1)

setup(
    name="liftlearn",
    version=VERSION,
    description=(
        "Long-tailed image classification with CLIP (LIFT+, ULFine) "
        "as scikit-learn estimators"
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["liftlearn", "liftlearn.*"]),
    include_package_data=True,
    package_data={
        "liftlearn.nn": ["model_configs/*.json"],
        "liftlearn.datasets": [
            "data/*.txt", "data/*.csv", "data/**/*", "data/classnames/*.txt",
        ],
    },
    entry_points={"console_scripts": ["liftlearn=liftlearn.cli:main"]},
    install_requires=[
        "torch",
        "torchvision",
        "open_clip_torch>=3,<4",
        "scikit-learn>=1.6",
        "numpy",
        "joblib",
        "pillow",
        "tqdm",
    ],
    extras_require={
        # dask[distributed] runs the scale-out test (a local CPU cluster);
        # datasets runs the Hugging Face input tests (an in-memory
        # datasets.Dataset; it also brings pandas, which reads history_).
        "test": ["pytest", "hypothesis", "dask[distributed]", "datasets"],
        "plot": ["matplotlib"],
        "dask": ["dask[distributed]"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
