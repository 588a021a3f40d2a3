"""Lightning Fabric, imported without its optional extras' costs.

vaelab depends on the standalone ``lightning-fabric`` package (Fabric alone, not the Trainer of
``lightning``). At import, ``lightning_fabric.utilities.imports`` asks for torchmetrics' version with
`lightning_utilities.compare_version`, which *imports* torchmetrics to read ``__version__``; torchmetrics in
turn imports matplotlib and scipy.signal: about 1.5 CPU seconds at every training start, for a flag that
only Fabric's SpikeDetection reads. While Fabric imports, that one question is answered from the installed
package's metadata instead (the same version, nothing imported).
"""

from __future__ import annotations

import sys


def fabric_class():
    """`lightning_fabric.Fabric`, imported without importing torchmetrics."""
    if "lightning_fabric" in sys.modules or "torchmetrics" in sys.modules:
        from lightning_fabric import Fabric

        return Fabric
    import lightning_utilities.core.imports as lu

    original = lu.compare_version

    def compare_version(package, op, version, use_base_version=False):
        if package != "torchmetrics":
            return original(package, op, version, use_base_version)
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as installed

        from packaging.version import Version

        try:
            found = Version(installed(package))
        except (PackageNotFoundError, ValueError):
            return False
        return op(Version(found.base_version) if use_base_version else found, Version(version))

    lu.compare_version = compare_version
    try:
        from lightning_fabric import Fabric
    finally:
        lu.compare_version = original
    return Fabric
