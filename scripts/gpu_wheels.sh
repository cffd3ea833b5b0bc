#!/usr/bin/env bash
# Fetch the wheels scripts/gpu_check.sh installs on the GPU machine (CPython 3.12, x86-64) into .whl/
# (ignored: `echo /.whl/ >> .git/info/exclude`).  The versions are this project's tested ones.
set -eu
mkdir -p .whl
for pkg in textual==8.2.8 plotext==6.1.0 orjson==3.13.0 msgspec==0.23.0 rich==15.0.0 markdown-it-py==4.3.0 \
           mdit-py-plugins==0.7.0 linkify-it-py==2.2.0 uc-micro-py==2.0.0 platformdirs==4.14.9 pygments==2.20.0 \
           mdurl==0.1.2; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "$pkg"
done
ls .whl
