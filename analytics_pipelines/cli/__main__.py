"""`python -m analytics_pipelines.cli` is the same as `analytics-pipelines`."""

from analytics_pipelines.cli import main

raise SystemExit(main())
