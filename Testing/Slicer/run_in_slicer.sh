#!/usr/bin/env bash
# Run MedLVM's in-app tests (MedLVMTest, MedLVMEngineTest) in a Slicer installation, without building the
# extension: the module is loaded from this checkout. Linux needs a display (use `xvfb-run -a` on CI).
#   Testing/Slicer/run_in_slicer.sh /path/to/Slicer [TestName ...]
# Torch must already be installed in Slicer (the tests do not install packages under --testing):
#   /path/to/Slicer --no-splash --python-code "import PyTorchUtils; PyTorchUtils.PyTorchUtilsLogic().installTorch()"
set -euo pipefail
slicer="${1:?usage: $0 /path/to/Slicer [TestName ...]}"
shift
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tests=("$@")
[ ${#tests[@]} -eq 0 ] && tests=(MedLVM MedLVMEngineTest)
for test in "${tests[@]}"; do
  echo "== ${test}"
  "${slicer}" --no-splash --testing --additional-module-paths "${root}/MedLVM" --python-code \
    "import slicer.testing; slicer.testing.runUnitTest(['${root}/MedLVM', '${root}/MedLVM/Testing/Python'], '${test}')"
done
