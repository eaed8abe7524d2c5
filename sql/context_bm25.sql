-- Candidate notes: Okapi BM25 of each target query against the notes pool, top m per query.
--   {note_terms}:  note_id, term, tf, dl   (one row per distinct term of a note; dl = note length in tokens)
--   {query_terms}: query_key, term         (distinct terms of each target query)
--   :k1, :b        BM25 parameters
--   :max_df_ratio  terms found in more than this share of notes are skipped (stop-word-like: tiny IDF,
--                  huge postings) ... :df_cut_min_docs  ... but only in pools of at least this many notes
--   :min_score, :top_m
WITH docs AS (
  SELECT DISTINCT note_id, dl FROM {note_terms}
),
stats AS (
  SELECT count(*) AS n_docs, avg(dl) AS avgdl FROM docs
),
idf AS (
  SELECT d.term, ln(1 + (s.n_docs - d.df + 0.5) / (d.df + 0.5)) AS idf
  FROM (SELECT term, count(*) AS df FROM {note_terms} GROUP BY term) d
  CROSS JOIN stats s
  WHERE s.n_docs < :df_cut_min_docs OR d.df <= :max_df_ratio * s.n_docs
),
scores AS (
  SELECT q.query_key, t.note_id,
         sum(i.idf * t.tf * (:k1 + 1) / (t.tf + :k1 * (1 - :b + :b * t.dl / s.avgdl))) AS score
  FROM {query_terms} q
  JOIN idf i ON q.term = i.term
  JOIN {note_terms} t ON t.term = q.term
  CROSS JOIN stats s
  GROUP BY q.query_key, t.note_id
),
ranked AS (
  SELECT query_key, note_id, score,
         row_number() OVER (PARTITION BY query_key ORDER BY score DESC, note_id) AS note_rank
  FROM scores
  WHERE score > :min_score
)
SELECT query_key, note_id, score, note_rank
FROM ranked
WHERE note_rank <= :top_m
