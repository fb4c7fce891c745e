"""KPI catalog support: the expression language for measures, filters and derived KPIs."""
