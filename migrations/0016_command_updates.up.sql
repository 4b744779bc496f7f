-- The status updates of commands (postgres.DB.UpdateCommands and
-- WriteCommands) as a function, so that iotgate can run them as a prepared
-- statement: parsed and planned once per connection instead of at every
-- batch, in one round trip instead of two.
--
-- Run as a prepared statement, the UPDATE itself got a generic plan made
-- while commands was small: a hash join over a sequential scan of the
-- table, kept as the table grew (no ANALYZE in between invalidates it),
-- at a cost that grew with the table. Here its plan is pinned: the
-- function's settings leave a nested loop over the batch's rows with a
-- lookup of each command by its primary key as the only sensible plan,
-- and the plan is the generic one from the first call (no custom plan,
-- which would be planned at every call again). The settings hold only
-- while the function runs.
CREATE FUNCTION iotgate_update_commands(
    p_ids text[], p_from_statuses text[], p_events jsonb[],
    p_status text[], p_target text[], p_sent_at timestamptz[], p_completed_at timestamptz[], p_answered_at timestamptz[],
    p_response_xml text[], p_response_data jsonb[], p_response_invalid text[],
    p_xmpp_error_type text[], p_xmpp_error_condition text[], p_xmpp_error_text text[],
    p_error_code text[], p_error text[], p_late_answer boolean[], p_iq_id text[], p_instance text[])
RETURNS SETOF text
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    updated text[];
BEGIN
    -- Each row's outcome columns are set, and its history entry (if any)
    -- appended, only where the stored status is one of the row's allowed
    -- ones (a comma-separated list). The IDs updated are returned.
    WITH u AS (
        UPDATE commands c SET (status, target, sent_at, completed_at, answered_at,
                response_xml, response_data, response_invalid,
                xmpp_error_type, xmpp_error_condition, xmpp_error_text,
                error_code, error, late_answer, iq_id, instance) =
            (v.status, v.target, v.sent_at, v.completed_at, v.answered_at,
                v.response_xml, v.response_data, v.response_invalid,
                v.xmpp_error_type, v.xmpp_error_condition, v.xmpp_error_text,
                v.error_code, v.error, v.late_answer, v.iq_id, v.instance),
            history = CASE WHEN v.ev IS NULL THEN c.history ELSE c.history || jsonb_build_array(v.ev) END
        FROM unnest(p_ids, p_from_statuses, p_events,
                p_status, p_target, p_sent_at, p_completed_at, p_answered_at,
                p_response_xml, p_response_data, p_response_invalid,
                p_xmpp_error_type, p_xmpp_error_condition, p_xmpp_error_text,
                p_error_code, p_error, p_late_answer, p_iq_id, p_instance)
            AS v(id, from_statuses, ev, status, target, sent_at, completed_at, answered_at,
                response_xml, response_data, response_invalid,
                xmpp_error_type, xmpp_error_condition, xmpp_error_text,
                error_code, error, late_answer, iq_id, instance)
        WHERE c.id = v.id AND c.status = ANY (string_to_array(v.from_statuses, ','))
        RETURNING c.id)
    SELECT array_agg(u.id) INTO updated FROM u;
    RETURN QUERY SELECT unnest(updated);
END
$$;
