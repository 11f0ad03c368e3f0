"""``python -m acesteps.cli``: the same as the ``acesteps`` command."""

from acesteps.cli.main import main

raise SystemExit(main())
