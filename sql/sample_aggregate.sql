-- Dedupe the day's well-formed log rows: one row per normalised query with its frequency (rows)
-- and UV (distinct users). {rows}: normalised query-log rows whose `malformed` is NULL.
SELECT
  query_key,
  min(query_norm)            AS query_norm,
  count(*)                   AS freq,
  count(DISTINCT user_id)    AS uv
FROM {rows}
GROUP BY query_key
