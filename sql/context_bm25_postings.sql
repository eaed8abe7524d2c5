-- BM25 postings of the notes pool: each (note, term)'s Okapi BM25 term weight, computed once per posting
-- (not once per query that shares the term), for sql/context_bm25.sql to sum per (query, note).
--   {note_terms}:  nid, term, tf, dl   (one row per distinct term of a note; dl = note length in tokens;
--                                       nid = the note's integer id, ordered like note_id)
--   :k1, :b        BM25 parameters
--   :max_df_ratio  terms found in more than this share of notes are skipped (stop-word-like: tiny IDF,
--                  huge postings) ... :df_cut_min_docs  ... but only in pools of at least this many notes
WITH docs AS (
  SELECT DISTINCT nid, dl FROM {note_terms}
),
stats AS (
  SELECT count(*) AS n_docs, avg(dl) AS avgdl FROM docs
),
idf AS (
  SELECT d.term, ln(1 + (s.n_docs - d.df + 0.5) / (d.df + 0.5)) AS idf
  FROM (SELECT term, count(*) AS df FROM {note_terms} GROUP BY term) d
  CROSS JOIN stats s
  WHERE s.n_docs < :df_cut_min_docs OR d.df <= :max_df_ratio * s.n_docs
)
SELECT t.term, t.nid,
       i.idf * t.tf * (:k1 + 1) / (t.tf + :k1 * (1 - :b + :b * t.dl / s.avgdl)) AS w
FROM {note_terms} t
JOIN idf i ON t.term = i.term
CROSS JOIN stats s
