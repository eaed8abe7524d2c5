-- The day in one aggregation: one row per normalised query with its frequency (rows) and UV (distinct
-- users), and one row per distinct malformed raw string (for the quarantine and its counts).
--   {rows}: user_id + query_norm, malformed, bad_query (qp_core.nearline.sample.normalized_log)
-- No query_key: it is a hash of query_norm, added per group afterwards (a third fewer bytes per row here).
SELECT
  query_norm,
  malformed,
  bad_query,
  count(*)                   AS freq,
  count(DISTINCT user_id)    AS uv
FROM {rows}
GROUP BY query_norm, malformed, bad_query
