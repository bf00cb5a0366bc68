"""What the engine needs inside Slicer's Python, and what installing it would change (no Qt, no torch import).

PyTorch comes through the PyTorch extension (PyTorchUtils picks the CUDA or CPU build); the other packages come
from pip, each with a minimum version. A package that is already importable is never installed again: that keeps
the ones Slicer ships (numpy, SimpleITK, ...) as they are. An installed torch older than the minimum is reported
with what to do (`outdated_torch_message`), never replaced from this module: torch may already be loaded.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from typing import Callable, NamedTuple, Optional

TORCH_MINIMUM = "2.1"
# import name -> pip requirement (distribution and minimum version)
ENGINE_PACKAGES = {
    "numpy": "numpy>=1.21",
    "SimpleITK": "SimpleITK>=2.2",
    "safetensors": "safetensors>=0.4",
    "scipy": "scipy>=1.9",
    "skimage": "scikit-image>=0.21",
    "tqdm": "tqdm>=4.60",
    "yaml": "pyyaml>=6.0",
    "nrrd": "pynrrd>=1.0",
    "ninja": "ninja>=1.11",
}
DOWNLOAD_PACKAGES = {"huggingface_hub": "huggingface_hub>=0.20"}  # only to download a model from the hub


def version_tuple(version: str) -> tuple[int, ...]:
    """Leading numeric release of a version string: "2.13.0+cu126" -> (2, 13, 0), "2.1" -> (2, 1)."""
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", version or "")
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def version_at_least(version: str, minimum: str) -> bool:
    """True when `version` is `minimum` or newer (missing trailing parts count as 0); False when unreadable."""
    have, need = version_tuple(version), version_tuple(minimum)
    if not have:
        return False
    width = max(len(have), len(need))
    return have + (0,) * (width - len(have)) >= need + (0,) * (width - len(need))


def installed_version(distribution: str) -> Optional[str]:
    """The installed version of a distribution from its metadata (nothing is imported), or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


class InstallPlan(NamedTuple):
    """What the engine is missing: `torch` is None (fine), "missing" or the too-old installed version."""

    torch: Optional[str]
    packages: list  # pip requirements of missing modules, e.g. ["safetensors>=0.4"]

    @property
    def empty(self) -> bool:
        return self.torch is None and not self.packages

    @property
    def torch_requirement(self) -> str:
        return f">={TORCH_MINIMUM}"

    @property
    def missing(self) -> list:
        """"torch" (missing or outdated) and the pip requirements, in install order."""
        return (["torch"] if self.torch else []) + list(self.packages)

    @property
    def torch_outdated(self) -> bool:
        return self.torch not in (None, "missing")


def install_plan(find_spec: Callable = importlib.util.find_spec,
                 version_of: Callable[[str], Optional[str]] = installed_version, download: bool = False) -> InstallPlan:
    """Compare the environment with what the engine needs (the lookups are arguments so tests can fake them);
    `download`: also what downloading a model from the hub needs."""
    torch = None
    if find_spec("torch") is None:
        torch = "missing"
    else:
        version = version_of("torch") or ""
        if not version_at_least(version, TORCH_MINIMUM):
            torch = version or "unknown version"
    wanted = {**ENGINE_PACKAGES, **(DOWNLOAD_PACKAGES if download else {})}
    packages = [requirement for module, requirement in wanted.items() if find_spec(module) is None]
    return InstallPlan(torch, packages)


def describe_plan(plan: InstallPlan) -> str:
    """The one confirmation text that lists everything an install would change."""
    return "MedLVM needs these Python packages:\n" + "\n".join(plan_lines(plan)) + \
        "\n\nPackages already installed (such as those Slicer ships) are left as they are. Install now?"


def plan_lines(plan: InstallPlan) -> list:
    """One "- package (how)" line per thing the plan installs."""
    lines = []
    if plan.torch == "missing":
        lines.append(f"- PyTorch {plan.torch_requirement} (through the PyTorch extension; CUDA build when a GPU "
                     "is found)")
    return lines + [f"- {requirement} (pip)" for requirement in plan.packages]


def outdated_torch_message(plan: InstallPlan) -> str:
    return (f"MedLVM needs PyTorch {plan.torch_requirement}, but PyTorch {plan.torch} is installed. Update it in the "
            "PyTorch Utils module (uninstall, then install a newer version), restart Slicer and try again.")


def install(plan: InstallPlan, confirm: Optional[Callable[[str], bool]], install_torch: Callable[[str], bool],
            pip_install: Callable[[str], None]) -> bool:
    """Carry out `plan` after one `confirm(describe_plan(plan))` (None: without asking). PyTorch goes through
    `install_torch(requirement)` (the PyTorch extension), the rest through `pip_install`. Returns False when the
    user declined or PyTorch was not installed; an outdated torch raises RuntimeError saying how to update it."""
    if plan.torch_outdated:
        raise RuntimeError(outdated_torch_message(plan))
    if plan.empty:
        return True
    if confirm is not None and not confirm(describe_plan(plan)):
        return False
    if plan.torch and not install_torch(plan.torch_requirement):
        return False
    for requirement in plan.packages:
        pip_install(requirement)
    return True
