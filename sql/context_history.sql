-- Rewrite history: for each target query, the k queries that most often come right before it within a
-- session (sessions ordered by event_time). Listed like a session, oldest to newest: the most frequent
-- predecessor comes LAST, next to the query (qp_core.prompt keeps the last k when it must cut).
--   {rows}:    normalised, well-formed log rows of the lookback window (session_id, event_time, query_norm)
--   {targets}: query_key, query_norm of the queries that need context
--   :k         history length
-- The rows carry no query_key: the window's shuffle moves every row of the window, and the key (a hash of
-- query_norm, one per target) is a third of a row's bytes. Targets are matched on query_norm instead.
WITH ordered AS (
  SELECT
    query_norm,
    lag(query_norm) OVER (PARTITION BY session_id ORDER BY event_time, query_norm) AS prev
  FROM {rows}
),
pairs AS (
  SELECT t.query_key, o.prev, count(*) AS n
  FROM ordered o
  JOIN {targets} t ON o.query_norm = t.query_norm
  WHERE o.prev IS NOT NULL AND o.prev <> o.query_norm
  GROUP BY t.query_key, o.prev
),
ranked AS (
  SELECT query_key, prev, n,
         row_number() OVER (PARTITION BY query_key ORDER BY n DESC, prev) AS r
  FROM pairs
)
SELECT query_key,
       reverse(transform(array_sort(collect_list(struct(r, prev))), x -> x.prev)) AS history
FROM ranked
WHERE r <= :k
GROUP BY query_key
