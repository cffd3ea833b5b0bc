import sys

from .train.threads import apply_wait_policy

apply_wait_policy(sys.argv[1:])  # before .cli, or anything it imports, can load torch (threads.py)

from .cli import main  # noqa: E402

raise SystemExit(main())
