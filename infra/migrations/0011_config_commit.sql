-- One round trip for the end of every governance change: lock the config_state row,
-- THEN take the next version (so versions follow commit order: the lock is held until
-- the transaction commits), record it, write the audit entry. Called last in the
-- change's transaction by the config service.
CREATE OR REPLACE FUNCTION config_commit(
    p_actor text,
    p_actor_team_id text,
    p_action text,
    p_target_type text,
    p_target_id text,
    p_team_id text,
    p_before jsonb,
    p_after jsonb,
    p_prices boolean
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v bigint;
BEGIN
    -- the upsert takes the row lock (and restores the row should the table be emptied)
    INSERT INTO config_state (id, version) VALUES (true, 0)
        ON CONFLICT (id) DO UPDATE SET id = EXCLUDED.id;
    v := nextval('config_version_seq');
    UPDATE config_state
       SET version = v,
           changed_at = now(),
           price_version = CASE WHEN p_prices THEN v ELSE price_version END
     WHERE id;
    INSERT INTO audit_log (actor, actor_team_id, action, target_type, target_id, team_id,
                           before, after, config_version)
    VALUES (p_actor, p_actor_team_id, p_action, p_target_type, p_target_id, p_team_id,
            p_before, p_after, v);
    RETURN v;
END
$$;
