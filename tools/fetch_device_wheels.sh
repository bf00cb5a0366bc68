#!/usr/bin/env bash
# The wheels tools/device_run.sh needs on the GPU machine that its image lacks, for its Python 3.12, into .whl/
# (ignored by git; never commit them). Run here before the device call, which then names `.whl` in `carry`.
# The machine has torch, lightning, transformers, numpy, scipy, scikit-image, safetensors, matplotlib, PyYAML,
# tqdm and typing_extensions; it lacks pynrrd (the .seq.nrrd codec of the motion benchmark's read and write
# stages). SimpleITK and pydicom are not needed by any step (the dry run makes them unimportable to prove it).
#   bash tools/fetch_device_wheels.sh        # then: run(command="bash tools/device_run.sh", carry=[".whl"], ...)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
# pure-Python wheels: NAME==VERSION, dependencies included (pynrrd needs numpy and typing_extensions: both there)
WHEELS=("pynrrd==1.1.3")
mkdir -p .whl
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${WHEELS[@]}"
git check-ignore -q .whl || echo "warning: .whl/ is not ignored by git; add /.whl/ to .gitignore" >&2
ls -l .whl
