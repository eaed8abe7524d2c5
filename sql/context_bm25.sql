-- Candidate notes: Okapi BM25 of each target query against the notes pool, top m per query.
--   {postings}:    term, nid, w       (sql/context_bm25_postings.sql: a note's BM25 weight for a term)
--   {query_terms}: qid, term          (distinct terms of each target query; qid = the query's integer id)
--   :min_score, :top_m
-- Both ids are integers so the (query, note) aggregation, the biggest intermediate of the context step
-- (about a hundred candidate notes per query), groups and shuffles fixed-width keys instead of strings.
-- nid is ordered like note_id, so ties on score break exactly as they would on note_id.
WITH scores AS (
  SELECT q.qid, p.nid, sum(p.w) AS score
  FROM {query_terms} q
  JOIN {postings} p ON q.term = p.term
  GROUP BY q.qid, p.nid
),
ranked AS (
  SELECT qid, nid, score,
         row_number() OVER (PARTITION BY qid ORDER BY score DESC, nid) AS note_rank
  FROM scores
  WHERE score > :min_score
)
SELECT qid, nid, score, note_rank
FROM ranked
WHERE note_rank <= :top_m
