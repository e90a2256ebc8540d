"""`python -m task_app`: serve the Banking77 task app (see task_app.cli)."""

from task_app.cli import main

raise SystemExit(main())
