-- Enrichment diagnostics for PostgreSQL (pgAdmin, psql): the ten queries behind
-- `cowrie-enrich diagnose`, giving the same numbers (tests/diagnostics/test_sql_file.py).
--
-- Every enrichment value is an outcome envelope: {"status": success | not_found | skipped
-- | error, "reason": ..., "http_status": ..., "message": ..., "checked_at": ..., "data": ...}.
-- Coverage: covered = success or not_found. Skipped with reason not_routable or
-- not_applicable is final: such rows leave the denominator. Every other skip, every error
-- and a missing envelope (never attempted) is a gap.
-- Session services: dshield, urlhaus, spur. Thresholds: sessions 90 %, DShield 95 %,
-- URLhaus 90 %, SPUR 80 %, VirusTotal 80 % of files, HIBP 80 % of passwords.
-- Each statement ends with a semicolon at the end of a line; each is preceded by a
-- "-- result: N" line naming the diagnostic it answers.

-- 1. Session enrichment completeness ---------------------------------------------------
-- A session is left out when all three services are final skips, complete when none of
-- them is a gap, and "with any" when at least one is covered.
-- result: 1
WITH s AS (
    SELECT
        CASE WHEN enrichment #>> '{dshield,status}' IN ('success', 'not_found') THEN 'covered'
             WHEN enrichment #>> '{dshield,status}' = 'skipped'
              AND enrichment #>> '{dshield,reason}' IN ('not_routable', 'not_applicable')
             THEN 'final' ELSE 'gap' END AS dshield,
        CASE WHEN enrichment #>> '{urlhaus,status}' IN ('success', 'not_found') THEN 'covered'
             WHEN enrichment #>> '{urlhaus,status}' = 'skipped'
              AND enrichment #>> '{urlhaus,reason}' IN ('not_routable', 'not_applicable')
             THEN 'final' ELSE 'gap' END AS urlhaus,
        CASE WHEN enrichment #>> '{spur,status}' IN ('success', 'not_found') THEN 'covered'
             WHEN enrichment #>> '{spur,status}' = 'skipped'
              AND enrichment #>> '{spur,reason}' IN ('not_routable', 'not_applicable')
             THEN 'final' ELSE 'gap' END AS spur
    FROM session_summaries
), c AS (
    SELECT
        count(*) AS sessions,
        count(*) FILTER (WHERE dshield = 'final' AND urlhaus = 'final' AND spur = 'final')
            AS excluded,
        count(*) FILTER (WHERE NOT (dshield = 'final' AND urlhaus = 'final' AND spur = 'final')
            AND 'covered' IN (dshield, urlhaus, spur)) AS with_any,
        count(*) FILTER (WHERE NOT (dshield = 'final' AND urlhaus = 'final' AND spur = 'final')
            AND 'gap' NOT IN (dshield, urlhaus, spur)) AS complete
    FROM s
)
SELECT sessions, excluded, sessions - excluded AS denominator, with_any, complete,
       round(100.0 * complete / nullif(sessions - excluded, 0), 2) AS coverage_pct
FROM c;

-- 2. Enrichment by service -------------------------------------------------------------
-- Sessions for DShield, URLhaus and SPUR; files with a hash for VirusTotal; distinct
-- passwords of the login attempts for HIBP.
-- result: 2
WITH e AS (
    SELECT 'dshield' AS service, 'sessions' AS target,
           enrichment #>> '{dshield,status}' AS status, enrichment #>> '{dshield,reason}' AS reason
    FROM session_summaries
    UNION ALL
    SELECT 'urlhaus', 'sessions', enrichment #>> '{urlhaus,status}', enrichment #>> '{urlhaus,reason}'
    FROM session_summaries
    UNION ALL
    SELECT 'spur', 'sessions', enrichment #>> '{spur,status}', enrichment #>> '{spur,reason}'
    FROM session_summaries
    UNION ALL
    SELECT 'virustotal', 'files', vt_analysis #>> '{status}', vt_analysis #>> '{reason}'
    FROM files WHERE shasum IS NOT NULL
    UNION ALL
    SELECT 'hibp', 'passwords', p.hibp #>> '{status}', p.hibp #>> '{reason}'
    FROM (SELECT DISTINCT password_sha256 FROM login_attempts
          WHERE password_sha256 IS NOT NULL) AS l
    LEFT JOIN password_enrichment AS p USING (password_sha256)
), c AS (
    SELECT service, target,
           count(*) AS total,
           count(*) FILTER (WHERE status = 'success') AS success,
           count(*) FILTER (WHERE status = 'not_found') AS not_found,
           count(*) FILTER (WHERE status = 'skipped'
                            AND reason IN ('not_routable', 'not_applicable')) AS final_skips,
           count(*) FILTER (WHERE status = 'skipped'
                            AND reason NOT IN ('not_routable', 'not_applicable')) AS skipped,
           count(*) FILTER (WHERE status = 'error') AS errors,
           count(*) FILTER (WHERE status IS NULL) AS never_attempted
    FROM e GROUP BY service, target
)
SELECT service, target, total, success, not_found, final_skips, skipped, errors,
       never_attempted, success + not_found AS covered, total - final_skips AS denominator,
       round(100.0 * (success + not_found) / nullif(total - final_skips, 0), 2) AS coverage_pct
FROM c ORDER BY service;

-- 3. Enrichment by time period (UTC day; use date_trunc('week', ...) for weeks) --------
-- Look for the first period from which coverage stays below the threshold: that is
-- when the backfill stopped working.
-- result: 3
WITH s AS (
    SELECT to_char(first_event_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS period,
        CASE WHEN enrichment #>> '{dshield,status}' IN ('success', 'not_found') THEN 'covered'
             WHEN enrichment #>> '{dshield,status}' = 'skipped'
              AND enrichment #>> '{dshield,reason}' IN ('not_routable', 'not_applicable')
             THEN 'final' ELSE 'gap' END AS dshield,
        CASE WHEN enrichment #>> '{urlhaus,status}' IN ('success', 'not_found') THEN 'covered'
             WHEN enrichment #>> '{urlhaus,status}' = 'skipped'
              AND enrichment #>> '{urlhaus,reason}' IN ('not_routable', 'not_applicable')
             THEN 'final' ELSE 'gap' END AS urlhaus,
        CASE WHEN enrichment #>> '{spur,status}' IN ('success', 'not_found') THEN 'covered'
             WHEN enrichment #>> '{spur,status}' = 'skipped'
              AND enrichment #>> '{spur,reason}' IN ('not_routable', 'not_applicable')
             THEN 'final' ELSE 'gap' END AS spur
    FROM session_summaries WHERE first_event_at IS NOT NULL
), c AS (
    SELECT period, count(*) AS sessions,
        count(*) FILTER (WHERE dshield = 'final' AND urlhaus = 'final' AND spur = 'final')
            AS excluded,
        count(*) FILTER (WHERE NOT (dshield = 'final' AND urlhaus = 'final' AND spur = 'final')
            AND 'gap' NOT IN (dshield, urlhaus, spur)) AS complete,
        count(*) FILTER (WHERE dshield = 'covered') AS dshield_covered,
        count(*) FILTER (WHERE dshield <> 'final') AS dshield_denominator
    FROM s GROUP BY period
)
SELECT period, sessions, complete, sessions - excluded AS denominator,
       round(100.0 * complete / nullif(sessions - excluded, 0), 2) AS coverage_pct,
       round(100.0 * dshield_covered / nullif(dshield_denominator, 0), 2) AS dshield_pct
FROM c ORDER BY period;

-- 4. File enrichment completeness (VirusTotal) -----------------------------------------
-- Files without a hash (failed transfers) are never sent and are counted apart.
-- result: 4
SELECT direction, count(*) AS rows,
       count(*) FILTER (WHERE shasum IS NULL) AS without_hash,
       count(*) FILTER (WHERE shasum IS NOT NULL
                        AND vt_analysis #>> '{status}' IN ('success', 'not_found')) AS covered,
       count(*) FILTER (WHERE shasum IS NOT NULL AND NOT coalesce(
           vt_analysis #>> '{status}' = 'skipped'
           AND vt_analysis #>> '{reason}' IN ('not_routable', 'not_applicable'), false))
           AS denominator,
       round(100.0 * count(*) FILTER (WHERE shasum IS NOT NULL
                        AND vt_analysis #>> '{status}' IN ('success', 'not_found'))
             / nullif(count(*) FILTER (WHERE shasum IS NOT NULL AND NOT coalesce(
                 vt_analysis #>> '{status}' = 'skipped'
                 AND vt_analysis #>> '{reason}' IN ('not_routable', 'not_applicable'), false)),
                 0), 2) AS coverage_pct
FROM files GROUP BY direction ORDER BY direction;

-- 5. Flags against data (DShield flag; successful outcomes without data) ----------------
-- result: 5
SELECT 'empty_data' AS check_name, 'sessions' AS target, svc AS service, count(*) AS rows
FROM session_summaries, unnest(ARRAY['dshield', 'urlhaus', 'spur']) AS svc
WHERE enrichment #>> ARRAY[svc, 'status'] = 'success'
  AND (enrichment #> ARRAY[svc, 'data'] IS NULL
       OR jsonb_typeof(enrichment #> ARRAY[svc, 'data']) = 'null'
       OR enrichment #> ARRAY[svc, 'data'] = '{}'::jsonb)
GROUP BY svc
UNION ALL
SELECT 'flag_without_outcome', 'sessions', 'dshield', count(*) FROM session_summaries
WHERE dshield_flagged IS NOT NULL
  AND coalesce(enrichment #>> '{dshield,status}', '') NOT IN ('success', 'not_found')
UNION ALL
SELECT 'outcome_without_flag', 'sessions', 'dshield', count(*) FROM session_summaries
WHERE dshield_flagged IS NULL AND enrichment #>> '{dshield,status}' IN ('success', 'not_found')
UNION ALL
SELECT 'flag_contradicts', 'sessions', 'dshield', count(*) FROM session_summaries
WHERE (dshield_flagged AND enrichment #>> '{dshield,status}' = 'not_found')
   OR (NOT dshield_flagged AND enrichment #>> '{dshield,status}' = 'success')
ORDER BY 1, 3;

-- 6. Sample sessions: a few per DShield outcome (attacker text: read with care) --------
-- result: 6
SELECT outcome, sensor, session_id, src_ip, enrichment
FROM (
    SELECT coalesce(enrichment #>> '{dshield,status}', 'never') AS outcome, sensor, session_id,
           src_ip, enrichment,
           row_number() OVER (PARTITION BY enrichment #>> '{dshield,status}' ORDER BY id) AS n
    FROM session_summaries
) AS ranked
WHERE n <= 2 ORDER BY outcome, n;

-- 7. Enrichment by sensor --------------------------------------------------------------
-- result: 7
WITH s AS (
    SELECT sensor,
        CASE WHEN enrichment #>> '{dshield,status}' IN ('success', 'not_found') THEN 'covered'
             WHEN enrichment #>> '{dshield,status}' = 'skipped'
              AND enrichment #>> '{dshield,reason}' IN ('not_routable', 'not_applicable')
             THEN 'final' ELSE 'gap' END AS dshield,
        CASE WHEN enrichment #>> '{urlhaus,status}' IN ('success', 'not_found') THEN 'covered'
             WHEN enrichment #>> '{urlhaus,status}' = 'skipped'
              AND enrichment #>> '{urlhaus,reason}' IN ('not_routable', 'not_applicable')
             THEN 'final' ELSE 'gap' END AS urlhaus,
        CASE WHEN enrichment #>> '{spur,status}' IN ('success', 'not_found') THEN 'covered'
             WHEN enrichment #>> '{spur,status}' = 'skipped'
              AND enrichment #>> '{spur,reason}' IN ('not_routable', 'not_applicable')
             THEN 'final' ELSE 'gap' END AS spur
    FROM session_summaries
), c AS (
    SELECT sensor, count(*) AS sessions,
        count(*) FILTER (WHERE dshield = 'final' AND urlhaus = 'final' AND spur = 'final')
            AS excluded,
        count(*) FILTER (WHERE NOT (dshield = 'final' AND urlhaus = 'final' AND spur = 'final')
            AND 'gap' NOT IN (dshield, urlhaus, spur)) AS complete
    FROM s GROUP BY sensor
)
SELECT sensor, sessions, complete, sessions - excluded AS denominator,
       round(100.0 * complete / nullif(sessions - excluded, 0), 2) AS coverage_pct
FROM c ORDER BY sensor COLLATE "C";

-- 8. High-value sessions without enrichment (the priority backfill list) ---------------
-- result: 8
SELECT sensor, session_id, src_ip, download_count + upload_count AS transfers,
       login_successes, command_count
FROM session_summaries
WHERE (download_count > 0 OR upload_count > 0 OR login_successes > 0 OR command_count > 0)
  AND EXISTS (
      SELECT 1 FROM unnest(ARRAY['dshield', 'urlhaus', 'spur']) AS svc
      WHERE coalesce(enrichment #>> ARRAY[svc, 'status'], '') NOT IN ('success', 'not_found')
        AND NOT (enrichment #>> ARRAY[svc, 'status'] = 'skipped'
                 AND coalesce(enrichment #>> ARRAY[svc, 'reason'], '')
                     IN ('not_routable', 'not_applicable'))
  )
ORDER BY transfers DESC, login_successes DESC, command_count DESC, id;

-- 9a. Enrichment error patterns, by service, kind, HTTP status and message -------------
-- result: 9a
WITH e AS (
    SELECT 'sessions' AS target, svc AS service, enrichment -> svc AS env
    FROM session_summaries, unnest(ARRAY['dshield', 'urlhaus', 'spur']) AS svc
    UNION ALL SELECT 'files', 'virustotal', vt_analysis FROM files
    UNION ALL SELECT 'files', 'urlhaus', urlhaus FROM files
    UNION ALL SELECT 'passwords', 'hibp', hibp FROM password_enrichment
)
SELECT target, service, env ->> 'reason' AS kind, (env ->> 'http_status')::int AS http_status,
       env ->> 'message' AS message, count(*) AS rows,
       min(env ->> 'checked_at') AS first_seen, max(env ->> 'checked_at') AS last_seen
FROM e WHERE env ->> 'status' = 'error'
GROUP BY 1, 2, 3, 4, 5
ORDER BY rows DESC, target, service, kind, http_status, message;

-- 9b. Dead letters: input lines that could not be loaded -------------------------------
-- result: 9b
SELECT reason, count(*) AS rows, count(*) FILTER (WHERE resolved_at IS NULL) AS unresolved,
       min(created_at) AS first_seen, max(created_at) AS last_seen,
       round(100.0 * count(*) FILTER (WHERE resolved_at IS NULL)
             / nullif((SELECT count(*) FROM raw_events)
                      + count(*) FILTER (WHERE resolved_at IS NULL), 0), 2) AS pct_of_input
FROM dead_letter_events GROUP BY reason ORDER BY rows DESC, reason;

-- 10. Password enrichment (HIBP) over the distinct passwords ---------------------------
-- result: 10
WITH p AS (
    SELECT e.hibp #>> '{status}' AS status, e.hibp #>> '{reason}' AS reason, e.breached
    FROM (SELECT DISTINCT password_sha256 FROM login_attempts
          WHERE password_sha256 IS NOT NULL) AS l
    LEFT JOIN password_enrichment AS e USING (password_sha256)
)
SELECT count(*) AS distinct_passwords,
       count(*) FILTER (WHERE status IN ('success', 'not_found')) AS covered,
       round(100.0 * count(*) FILTER (WHERE status IN ('success', 'not_found'))
             / nullif(count(*) FILTER (WHERE NOT coalesce(status = 'skipped'
                 AND reason IN ('not_routable', 'not_applicable'), false)), 0), 2)
           AS coverage_pct,
       count(*) FILTER (WHERE status IN ('success', 'not_found') AND breached) AS breached,
       count(*) FILTER (WHERE status IN ('success', 'not_found') AND NOT breached)
           AS not_breached
FROM p;
