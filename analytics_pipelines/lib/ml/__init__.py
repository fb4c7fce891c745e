"""Machine learning on day-grain KPIs: forecasts with prediction intervals and anomaly verdicts.

`series` reads a KPI's day values per dimension value and the total from `kpi.kpi_values` and
says which series can be modelled; `models` picks statsforecast models by history length;
`forecast` and `anomalies` fit them and write `kpi.forecast_values` / `kpi.anomaly_verdicts`
(migration 0007); `alerts` posts each anomalous cell to the webhook once; `read` is the
psycopg2-only read path of `kpi anomalies`. statsforecast and pandas are imported inside the
functions that fit, never when the CLI or the definitions load.
"""
