"""Who may read which KPI rows: audiences declared in the catalog (`access/*.yaml`), enforced by
PostgreSQL (one NOLOGIN role per audience, row-level security on the KPI tables, views that run
with the reader's rights). `models` and `rules` validate; `policies` applies; `report` reads."""
