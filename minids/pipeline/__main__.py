"""`torchrun --nproc-per-node N -m minids.pipeline ...`: see run.py."""

from .run import main

raise SystemExit(main())
