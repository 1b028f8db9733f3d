-- Reference: one day of landed files -> the served aggregates, in one hand-written DuckDB script.
--
-- No orchestration, no persisted raw/clean layers, no quarantine: it reads every events and
-- requests file of the day (all rows), pseudonymizes user ids with the same keyed HMAC as the
-- pipeline (`pseudonym` macro from de_assets.lib.privacy), truncates IPs, dedupes on messageId
-- (first delivery by receivedAt), applies the same acceptance rules as the pipeline's contracts,
-- and writes the day's aggregates to marts.* in the output DuckDB file.
--
-- benchmarks/reference.py substitutes the @PLACEHOLDERS@ (file lists as SQL list literals, the
-- day as a DATE literal) and installs the privacy macros before running this script.

SET TimeZone = 'UTC';
CREATE SCHEMA IF NOT EXISTS marts;

-- ---------------------------------------------------------------------------------------------
-- events: read every file, one row per record (malformed NDJSON lines are skipped: they never
-- reach an aggregate), keep the fields the aggregates need plus the pseudonymized ids and IP.
-- ---------------------------------------------------------------------------------------------
CREATE TEMP TABLE landed_events AS
SELECT filename, messageId, type, event, userId, anonymousId, "timestamp", sentAt, receivedAt,
       json_type(properties) AS properties_type,
       coalesce(properties->>'$.revenue', properties->>'$.total') AS revenue_text,
       context->>'$.ip' AS ip
FROM read_json(@EVENTS_NDJSON@, format = 'newline_delimited', ignore_errors = true, filename = true,
               columns = {messageId: 'VARCHAR', type: 'VARCHAR', event: 'VARCHAR', userId: 'VARCHAR',
                          anonymousId: 'VARCHAR', "timestamp": 'VARCHAR', sentAt: 'VARCHAR',
                          receivedAt: 'VARCHAR', properties: 'JSON', context: 'JSON'})
UNION ALL
-- CSV and Parquet carry properties/context as JSON text.
SELECT filename, messageId, type, event, userId, anonymousId, "timestamp", sentAt, receivedAt,
       CASE WHEN properties IS NULL THEN NULL WHEN json_valid(properties) THEN json_type(properties::JSON)
            ELSE 'VARCHAR' END AS properties_type,
       coalesce(json_extract_string(try(properties::JSON), '$.revenue'),
                json_extract_string(try(properties::JSON), '$.total')) AS revenue_text,
       json_extract_string(try(context::JSON), '$.ip') AS ip
FROM (
    SELECT * FROM read_csv(@EVENTS_CSV@, header = true, all_varchar = true, filename = true, union_by_name = true)
    UNION ALL BY NAME
    SELECT * FROM read_parquet(@EVENTS_PARQUET@, filename = true, union_by_name = true)
);

CREATE TEMP TABLE clean_events AS
WITH first_delivery AS (
    SELECT * FROM landed_events
    WHERE messageId IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY messageId
                               ORDER BY try_cast(receivedAt AS TIMESTAMPTZ) NULLS LAST, filename) = 1
),
typed AS (
    SELECT messageId AS message_id,
           lower(trim(type)) AS type,
           nullif(trim(event), '') AS event,
           pseudonym(userId) AS user_id,
           pseudonym(anonymousId) AS anonymous_id,
           truncate_ip(ip) AS ip_prefix,
           "timestamp" AS timestamp_text,
           try_cast("timestamp" AS TIMESTAMPTZ)::TIMESTAMP AS ts,
           try_cast(sentAt AS TIMESTAMPTZ)::TIMESTAMP AS sent_ts,
           try_cast(receivedAt AS TIMESTAMPTZ)::TIMESTAMP AS received_ts,
           properties_type, revenue_text,
           try_cast(revenue_text AS DOUBLE) AS revenue
    FROM first_delivery
),
corrected AS (
    SELECT *, coalesce(user_id, anonymous_id) AS user_key,
           CASE WHEN sent_ts IS NOT NULL AND received_ts IS NOT NULL AND ts IS NOT NULL
                THEN received_ts - (sent_ts - ts) ELSE ts END AS event_ts
    FROM typed
)
SELECT *, event_ts::DATE AS event_date
FROM corrected
WHERE length(message_id) BETWEEN 1 AND 256
  AND type IN ('track', 'page', 'screen', 'identify', 'group', 'alias')
  AND NOT (type = 'track' AND event IS NULL)
  AND user_key IS NOT NULL
  AND timestamp_text IS NOT NULL
  AND event_ts IS NOT NULL AND event_ts >= TIMESTAMP '2000-01-01'
  AND event_ts <= @DAY@::TIMESTAMP + INTERVAL 2 DAY
  AND (properties_type IS NULL OR properties_type = 'OBJECT')
  AND (revenue IS NULL OR revenue >= 0)
  AND (revenue_text IS NULL OR revenue IS NOT NULL);

-- ---------------------------------------------------------------------------------------------
-- requests
-- ---------------------------------------------------------------------------------------------
CREATE TEMP TABLE clean_requests AS
WITH landed AS (
    SELECT "timestamp", service, endpoint, host, status, latency_ms, cpu_pct, memory_mb
    FROM read_json(@REQUESTS_NDJSON@, format = 'newline_delimited', ignore_errors = true,
                   columns = {"timestamp": 'VARCHAR', service: 'VARCHAR', endpoint: 'VARCHAR', host: 'VARCHAR',
                              status: 'VARCHAR', latency_ms: 'VARCHAR', cpu_pct: 'VARCHAR', memory_mb: 'VARCHAR'})
    UNION ALL
    SELECT "timestamp", service, endpoint, host, status, latency_ms, cpu_pct, memory_mb
    FROM read_csv(@REQUESTS_CSV@, header = true, all_varchar = true, union_by_name = true)
),
first_delivery AS (  -- exact re-deliveries: same sample fingerprint
    SELECT * FROM landed
    QUALIFY row_number() OVER (PARTITION BY "timestamp", service, host, endpoint, status, latency_ms) = 1
),
typed AS (
    SELECT CASE WHEN regexp_full_match(trim("timestamp"), '\d+(\.\d+)?')
                THEN to_timestamp(CASE WHEN try_cast(trim("timestamp") AS DOUBLE) > 1e11
                                       THEN try_cast(trim("timestamp") AS DOUBLE) / 1000
                                       ELSE try_cast(trim("timestamp") AS DOUBLE) END)::TIMESTAMP
                ELSE try_cast("timestamp" AS TIMESTAMPTZ)::TIMESTAMP END AS request_ts,
           lower(trim(service)) AS service,
           try_cast(trim(status) AS DOUBLE) AS status,
           try_cast(trim(latency_ms) AS DOUBLE) AS latency_ms,
           try_cast(trim(cpu_pct) AS DOUBLE) AS cpu_pct,
           try_cast(trim(memory_mb) AS DOUBLE) AS memory_mb
    FROM first_delivery
)
SELECT *, request_ts::DATE AS event_date
FROM typed
WHERE request_ts IS NOT NULL AND request_ts >= TIMESTAMP '2000-01-01'
  AND request_ts <= @DAY@::TIMESTAMP + INTERVAL 2 DAY
  AND service IS NOT NULL AND length(service) >= 1
  AND status BETWEEN 100 AND 599
  AND latency_ms >= 0
  AND (cpu_pct IS NULL OR cpu_pct >= 0)
  AND (memory_mb IS NULL OR memory_mb >= 0);

-- ---------------------------------------------------------------------------------------------
-- aggregates of event day @DAY@ (trailing windows over everything loaded)
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE TABLE marts.daily_engagement AS
WITH user_days AS (SELECT DISTINCT user_key, event_date FROM clean_events),
first_seen AS (SELECT user_key, min(event_date) AS first_date FROM clean_events GROUP BY 1),
sessions AS (
    SELECT event_ts::DATE AS day,
           event_ts - lag(event_ts) OVER (PARTITION BY user_key ORDER BY event_ts) AS gap
    FROM clean_events
    WHERE event_date BETWEEN @DAY@ - 1 AND @DAY@ AND event_ts >= @DAY@::TIMESTAMP - INTERVAL 30 MINUTE
),
actives AS (
    SELECT count(DISTINCT user_key) FILTER (WHERE event_date = @DAY@) AS dau,
           count(DISTINCT user_key) FILTER (WHERE event_date BETWEEN @DAY@ - 6 AND @DAY@) AS wau,
           count(DISTINCT user_key) FILTER (WHERE event_date BETWEEN @DAY@ - 29 AND @DAY@) AS mau
    FROM user_days
)
SELECT @DAY@ AS event_date, a.dau, a.wau, a.mau, a.dau / nullif(a.mau, 0) AS stickiness,
       n.new_users, a.dau - n.new_users AS returning_users, s.sessions, s.events
FROM actives a,
     (SELECT count(*) AS new_users FROM first_seen WHERE first_date = @DAY@) n,
     (SELECT count(*) FILTER (WHERE gap IS NULL OR gap > INTERVAL 30 MINUTE) AS sessions, count(*) AS events
      FROM sessions WHERE day = @DAY@) s;

CREATE OR REPLACE TABLE marts.funnel_daily AS
WITH ev AS (
    SELECT user_key, event_ts, event AS step FROM clean_events
    WHERE event_date = @DAY@ AND type = 'track'
      AND event IN ('Product Viewed', 'Product Added', 'Checkout Started', 'Order Completed')
),
s1 AS (SELECT user_key, min(event_ts) AS t FROM ev WHERE step = 'Product Viewed' GROUP BY 1),
s2 AS (SELECT e.user_key, min(e.event_ts) AS t FROM ev e JOIN s1 USING (user_key)
       WHERE e.step = 'Product Added' AND e.event_ts >= s1.t GROUP BY 1),
s3 AS (SELECT e.user_key, min(e.event_ts) AS t FROM ev e JOIN s2 USING (user_key)
       WHERE e.step = 'Checkout Started' AND e.event_ts >= s2.t GROUP BY 1),
s4 AS (SELECT e.user_key, min(e.event_ts) AS t FROM ev e JOIN s3 USING (user_key)
       WHERE e.step = 'Order Completed' AND e.event_ts >= s3.t GROUP BY 1),
steps AS (
    SELECT 1 AS step_order, 'Product Viewed' AS step, (SELECT count(*) FROM s1) AS users
    UNION ALL SELECT 2, 'Product Added', (SELECT count(*) FROM s2)
    UNION ALL SELECT 3, 'Checkout Started', (SELECT count(*) FROM s3)
    UNION ALL SELECT 4, 'Order Completed', (SELECT count(*) FROM s4)
)
SELECT @DAY@ AS event_date, 'checkout' AS funnel, step_order, step, users,
       CASE WHEN step_order = 1 THEN CASE WHEN users > 0 THEN 1.0 END
            ELSE users / nullif(lag(users) OVER (ORDER BY step_order), 0) END AS conversion_from_previous,
       users / nullif(first_value(users) OVER (ORDER BY step_order), 0) AS conversion_from_start
FROM steps;

CREATE OR REPLACE TABLE marts.revenue_daily AS
SELECT @DAY@ AS event_date,
       count(*) FILTER (WHERE is_order) AS orders,
       coalesce(sum(revenue) FILTER (WHERE is_order), 0.0) AS revenue,
       count(DISTINCT user_key) FILTER (WHERE is_order) AS paying_users,
       coalesce(sum(revenue) FILTER (WHERE is_order), 0.0) / nullif(count(DISTINCT user_key), 0) AS arpu,
       sum(revenue) FILTER (WHERE is_order) / nullif(count(DISTINCT user_key) FILTER (WHERE is_order), 0) AS arppu
FROM (SELECT *, type = 'track' AND event = 'Order Completed' AS is_order FROM clean_events WHERE event_date = @DAY@);

CREATE OR REPLACE TABLE marts.retention_cohorts AS
WITH first_seen AS (
    SELECT user_key, date_trunc('week', min(event_date))::DATE AS cohort_week FROM clean_events GROUP BY 1
),
cohorts AS (SELECT cohort_week, count(*) AS cohort_size FROM first_seen GROUP BY 1),
week AS (SELECT date_trunc('week', @DAY@)::DATE AS activity_week),
active AS (
    SELECT DISTINCT user_key FROM clean_events, week
    WHERE event_date BETWEEN week.activity_week AND week.activity_week + 6
),
retained AS (SELECT cohort_week, count(*) AS retained_users FROM active JOIN first_seen USING (user_key) GROUP BY 1)
SELECT c.cohort_week, (date_diff('day', c.cohort_week, w.activity_week) // 7)::INTEGER AS weeks_since,
       c.cohort_size, coalesce(r.retained_users, 0) AS retained_users,
       coalesce(r.retained_users, 0) / c.cohort_size AS retention_rate, w.activity_week
FROM cohorts c JOIN week w ON c.cohort_week <= w.activity_week
LEFT JOIN retained r USING (cohort_week);

CREATE OR REPLACE TABLE marts.service_latency AS
SELECT event_date, service, requests, errors, errors / requests AS error_rate,
       q[1] AS p50_ms, q[2] AS p90_ms, q[3] AS p99_ms
FROM (
    SELECT event_date, service, count(*) AS requests, count(*) FILTER (WHERE status >= 500) AS errors,
           quantile_cont(latency_ms, [0.5, 0.9, 0.99]) AS q
    FROM clean_requests WHERE event_date = @DAY@
    GROUP BY ALL
);
