"""Which packages the wheel holds; everything else is in pyproject.toml.

Every package under lecture_lib/ is found automatically (a new subpackage cannot silently drop
out of the installed wheel, and so out of Colab), and data/ at the top of the checkout ships inside
the wheel as lecture_lib/data, so a non-editable install finds the same files as a checkout.
"""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["lecture_lib", "lecture_lib.*"]) + ["lecture_lib.data"],
    package_dir={"lecture_lib.data": "data"},
)
