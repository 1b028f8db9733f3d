"""The typed projections of the clean step, as SQL text: raw rows of `_cur` that parsed and are not
in `_dup` (the later deliveries), typed and normalized, one query per source.

`de_assets/lib/clean.py` runs them (`CleanSpec.typed_sql`) into `_typed`, which the pandera
contracts then validate. Timestamps are cast through TIMESTAMPTZ (the connection is UTC) to naive
TIMESTAMP.
"""

_TS = "try_cast({0} AS TIMESTAMPTZ)::TIMESTAMP"

EVENTS_TYPED = f"""
    SELECT *,
        CASE WHEN sent_ts IS NOT NULL AND received_ts IS NOT NULL AND ts IS NOT NULL
             THEN received_ts - (sent_ts - ts) ELSE ts END AS event_ts,
        date_diff('millisecond', received_ts, sent_ts) / 1000.0 AS clock_skew_seconds,
        try_cast(revenue_text AS DOUBLE) AS revenue
    FROM (
        SELECT row_id, arrival_date, source_file, line_no,
            message_id,
            lower(trim(type)) AS type,
            nullif(trim(event), '') AS event,
            coalesce(user_id, anonymous_id) AS user_key, user_id, anonymous_id,
            {_TS.format("timestamp")} AS ts,
            {_TS.format("sent_at")} AS sent_ts,
            {_TS.format("received_at")} AS received_ts,
            timestamp IS NOT NULL AS timestamp_sent,
            json_type(properties) AS properties_type,
            coalesce(properties->>'$.revenue', properties->>'$.total') AS revenue_text,
            revenue_text IS NOT NULL AS revenue_sent,
            properties->>'$.experiment_id' AS experiment_id,
            properties->>'$.variant_id' AS variant_id,
            properties, context
        FROM _cur
        WHERE parse_error IS NULL AND row_id NOT IN (SELECT row_id FROM _dup)
    )
"""

_EPOCH = "try_cast(trim(timestamp) AS DOUBLE)"
REQUESTS_TYPED = f"""
    SELECT row_id, arrival_date, source_file, line_no, record_id,
        CASE WHEN regexp_full_match(trim(timestamp), '\\d+(\\.\\d+)?')
             THEN to_timestamp(CASE WHEN {_EPOCH} > 1e11 THEN {_EPOCH} / 1000 ELSE {_EPOCH} END)::TIMESTAMP
             ELSE {_TS.format("timestamp")} END AS request_ts,
        lower(trim(service)) AS service,
        trim(endpoint) AS endpoint,
        trim(host) AS host,
        try_cast(trim(status) AS DOUBLE) AS status,
        try_cast(trim(latency_ms) AS DOUBLE) AS latency_ms,
        try_cast(trim(cpu_pct) AS DOUBLE) AS cpu_pct,
        try_cast(trim(memory_mb) AS DOUBLE) AS memory_mb
    FROM _cur
    WHERE parse_error IS NULL AND row_id NOT IN (SELECT row_id FROM _dup)
"""
