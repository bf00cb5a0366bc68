from __future__ import annotations

import sys

from MedLVMLib.cli import main

sys.exit(main())
