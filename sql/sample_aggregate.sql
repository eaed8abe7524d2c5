-- The day in one aggregation: one row per normalised query with its frequency (rows) and UV (distinct
-- users), and one row per distinct malformed raw string (for the quarantine and its counts).
--   {rows}: user_id, query + query_norm, query_key, malformed (qp_core.nearline.sample.normalized_log)
-- query_norm is a grouping key, not min(query_norm): query_key is a hash of it, so the groups are the
-- same, and string aggregation buffers would force a sort-based aggregate.
SELECT
  query_key,
  query_norm,
  malformed,
  CASE WHEN malformed IS NOT NULL THEN query END AS bad_query,
  count(*)                   AS freq,
  count(DISTINCT user_id)    AS uv
FROM {rows}
GROUP BY query_key, query_norm, malformed, CASE WHEN malformed IS NOT NULL THEN query END
