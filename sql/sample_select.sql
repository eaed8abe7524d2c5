-- Choose the day's generation set and say why each query is in it.
--   {queries}:  query_key, query_norm, freq, uv of the day
--   {manifest}: query_key, last_dt of what the target KV namespace already holds (may be empty)
--   :version_change  TRUE when the target namespace is new while another one is live: everything is regenerated
--   :dt, :refresh_days  a result at least refresh_days old is stale
-- Ranking and the budget cut are done by the caller (qp_core.spark.global_rank: a parallel sort, not a
-- window without PARTITION BY, which would move every distinct query of the day into one task).
-- Only what was published BEFORE :dt counts as held, so re-running a date selects exactly what its first
-- run selected (the rerun/backfill idempotence contract) instead of nothing.
WITH held AS (
  SELECT query_key, max(last_dt) AS last_dt FROM {manifest} WHERE last_dt < :dt GROUP BY query_key
),
candidates AS (
  SELECT
    q.query_norm, q.query_key, q.freq, q.uv,
    CASE
      WHEN :version_change THEN 'version_change'
      WHEN h.query_key IS NULL THEN 'missing'
      WHEN datediff(to_date(:dt), to_date(h.last_dt)) >= :refresh_days THEN 'stale'
    END AS reason
  FROM {queries} q
  LEFT JOIN held h ON q.query_key = h.query_key
)
SELECT query_norm, query_key, freq, uv, reason
FROM candidates
WHERE reason IS NOT NULL
