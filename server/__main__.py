"""python -m server: the traceward command."""

from server.cli import main

raise SystemExit(main())
