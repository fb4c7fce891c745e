"""Which waiting run Dagster's queue starts first (its `dagster/priority` tag, higher first).

A delivery's numbers come first: the load of a new file, then the KPI days it touched, then
the later days whose windows contain them (28-day, year-to-date), then the forecasts and
anomaly verdicts refitted on the new values. Scheduled and hand-started runs keep the default,
between the window repaints and the ML.
"""

PRIORITY_TAG = "dagster/priority"

INGEST = {PRIORITY_TAG: "3"}
KPI_TOUCHED_DAYS = {PRIORITY_TAG: "2"}
KPI_WINDOW_DAYS = {PRIORITY_TAG: "1"}
ML_REFIT = {PRIORITY_TAG: "-1"}
