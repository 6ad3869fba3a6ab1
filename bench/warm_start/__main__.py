"""`python -m bench.warm_start`: the bench (bench/warm_start/__init__.py), or one of its retrains in a
child process (--child)."""
import sys
from pathlib import Path

from bench.warm_start import child_main, main

if "--child" in sys.argv:
    child_main(Path(sys.argv[sys.argv.index("--child") + 1]))
else:
    sys.exit(main())
