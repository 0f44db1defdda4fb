/**
 * Schema migrations of the PostgreSQL lease store, in order; `lease_schema.version` counts the
 * ones applied. They run in one transaction under an advisory lock (`migrationLockKey`), so
 * gateways starting together apply each exactly once (SPEC 10).
 *
 * The tables mirror SQLite's: `instances.session_id` and `leases.instance_address` are both
 * UNIQUE (an instance can never be leased twice, whatever a gateway believes), allocation reads a
 * partial index of free instances. Triggers NOTIFY `lease_changes` on every lease created or
 * ended and every instance change that matters to allocation, inside the writing transaction, so
 * a listener hears of a change exactly when it is committed (lease caches, wake-ups).
 */
export const postgresMigrations: readonly string[] = [
  `CREATE TABLE instances (
     address       text PRIMARY KEY,
     pod_name      text NOT NULL DEFAULT '',
     boot_id       text NOT NULL DEFAULT '',
     healthy       boolean NOT NULL DEFAULT false,
     draining      boolean NOT NULL DEFAULT false,
     clean         boolean NOT NULL DEFAULT false,
     session_id    text UNIQUE,
     free_since    bigint NOT NULL DEFAULT 0,
     released_at   bigint NOT NULL DEFAULT 0,
     updated_at    bigint NOT NULL DEFAULT 0,
     fence_boot_id text NOT NULL DEFAULT ''
   );
   CREATE INDEX instances_allocatable ON instances(free_since)
     WHERE session_id IS NULL AND healthy AND clean AND NOT draining;
   CREATE TABLE leases (
     session_id       text PRIMARY KEY,
     instance_address text NOT NULL UNIQUE REFERENCES instances(address),
     pod_name         text NOT NULL,
     owner            text NOT NULL,
     instance_boot_id text NOT NULL,
     created_at       bigint NOT NULL,
     last_activity    bigint NOT NULL,
     expires_at       bigint NOT NULL
   );
   CREATE INDEX leases_expiry ON leases(expires_at);
   CREATE INDEX leases_owner ON leases(owner);
   CREATE TABLE gateways (
     id           text PRIMARY KEY,
     address      text NOT NULL,
     started_at   bigint NOT NULL,
     heartbeat_at bigint NOT NULL
   );

   CREATE FUNCTION lease_notify_lease() RETURNS trigger LANGUAGE plpgsql AS $$
   BEGIN
     IF TG_OP = 'INSERT' THEN
       PERFORM pg_notify('lease_changes', json_build_object('k', 'lease', 'op', 'acquired', 's', NEW.session_id, 'a', NEW.instance_address)::text);
     ELSE
       PERFORM pg_notify('lease_changes', json_build_object('k', 'lease', 'op', 'released', 's', OLD.session_id, 'a', OLD.instance_address)::text);
     END IF;
     RETURN NULL;
   END $$;
   CREATE TRIGGER leases_notify AFTER INSERT OR DELETE ON leases FOR EACH ROW EXECUTE FUNCTION lease_notify_lease();

   CREATE FUNCTION lease_notify_instance() RETURNS trigger LANGUAGE plpgsql AS $$
   BEGIN
     PERFORM pg_notify('lease_changes', json_build_object('k', 'instance', 'a', NEW.address)::text);
     RETURN NULL;
   END $$;
   CREATE TRIGGER instances_notify AFTER INSERT OR UPDATE OF healthy, draining, clean, session_id, boot_id ON instances
     FOR EACH ROW EXECUTE FUNCTION lease_notify_instance();

   CREATE FUNCTION lease_notify_members() RETURNS trigger LANGUAGE plpgsql AS $$
   BEGIN
     PERFORM pg_notify('lease_changes', '{"k":"members"}');
     RETURN NULL;
   END $$;
   CREATE TRIGGER gateways_notify AFTER INSERT OR DELETE ON gateways FOR EACH ROW EXECUTE FUNCTION lease_notify_members();

   -- Group commit (SPEC 10): every acquisition of one event-loop turn, in order, in one call and
   -- one transaction. FOR UPDATE SKIP LOCKED: concurrent gateways never wait for each other's
   -- candidate rows, and never take the same one. A session that another gateway leased at the
   -- same moment gets that lease back ("existing"), never a second instance.
   CREATE FUNCTION lease_acquire_batch(requests jsonb, now_ms bigint) RETURNS jsonb LANGUAGE plpgsql AS $$
   DECLARE
     r jsonb;
     results jsonb := '[]'::jsonb;
     l leases%ROWTYPE;
     inst instances%ROWTYPE;
     n bigint;
     lim int;
     avoid text;
   BEGIN
     FOR r IN SELECT value FROM jsonb_array_elements(requests) LOOP
       SELECT * INTO l FROM leases WHERE session_id = r->>'s';
       IF FOUND THEN
         results := results || jsonb_build_array(jsonb_build_object('k', 'existing', 'l', to_jsonb(l)));
         CONTINUE;
       END IF;
       lim := COALESCE((r->>'m')::int, 0);
       IF lim > 0 THEN
         -- One owner's sessions are counted one transaction at a time, across gateways.
         PERFORM pg_advisory_xact_lock(hashtext('lease-owner:' || (r->>'o')));
         SELECT count(*) INTO n FROM leases WHERE owner = r->>'o';
         IF n >= lim THEN
           results := results || '[{"k":"user-limit"}]'::jsonb;
           CONTINUE;
         END IF;
       END IF;
       avoid := r->>'a';
       SELECT * INTO inst FROM instances
        WHERE session_id IS NULL AND healthy AND clean AND NOT draining AND (avoid IS NULL OR address <> avoid)
        ORDER BY free_since LIMIT 1 FOR UPDATE SKIP LOCKED;
       IF NOT FOUND THEN
         IF EXISTS (SELECT 1 FROM instances WHERE healthy) THEN
           results := results || '[{"k":"busy"}]'::jsonb;
         ELSE
           results := results || '[{"k":"unavailable"}]'::jsonb;
         END IF;
         CONTINUE;
       END IF;
       INSERT INTO leases (session_id, instance_address, pod_name, owner, instance_boot_id, created_at, last_activity, expires_at)
         VALUES (r->>'s', inst.address, inst.pod_name, r->>'o', inst.boot_id, now_ms, now_ms, now_ms + (r->>'t')::bigint)
         ON CONFLICT (session_id) DO NOTHING
         RETURNING * INTO l;
       IF NOT FOUND THEN
         SELECT * INTO l FROM leases WHERE session_id = r->>'s';
         results := results || jsonb_build_array(jsonb_build_object('k', 'existing', 'l', to_jsonb(l)));
         CONTINUE;
       END IF;
       UPDATE instances SET session_id = l.session_id, clean = false, updated_at = now_ms WHERE address = inst.address;
       results := results || jsonb_build_array(jsonb_build_object('k', 'acquired', 'l', to_jsonb(l)));
     END LOOP;
     RETURN results;
   END $$;

   -- Ends a lease and frees its instance (not clean: a probe must see it clean first). The
   -- instance row is locked first, as every other writer does, so two writers never deadlock.
   CREATE FUNCTION lease_end(l leases, now_ms bigint) RETURNS void LANGUAGE plpgsql AS $$
   BEGIN
     DELETE FROM leases WHERE session_id = l.session_id;
     UPDATE instances SET session_id = NULL, clean = false, free_since = now_ms, released_at = now_ms, updated_at = now_ms,
                          fence_boot_id = l.instance_boot_id
      WHERE address = l.instance_address;
   END $$;

   CREATE FUNCTION lease_release(p_session text, p_expect text, now_ms bigint) RETURNS jsonb LANGUAGE plpgsql AS $$
   DECLARE
     l leases%ROWTYPE;
   BEGIN
     PERFORM 1 FROM instances WHERE address = (SELECT instance_address FROM leases WHERE session_id = p_session) FOR UPDATE;
     SELECT * INTO l FROM leases WHERE session_id = p_session FOR UPDATE;
     IF NOT FOUND OR (p_expect IS NOT NULL AND l.instance_address <> p_expect) THEN
       RETURN NULL;
     END IF;
     PERFORM lease_end(l, now_ms);
     RETURN to_jsonb(l);
   END $$;

   -- Each expired lease is returned to exactly one caller: rows another sweeper holds are skipped.
   CREATE FUNCTION lease_expire(cutoff bigint, now_ms bigint) RETURNS jsonb LANGUAGE plpgsql AS $$
   DECLARE
     l leases%ROWTYPE;
     results jsonb := '[]'::jsonb;
   BEGIN
     FOR l IN SELECT le.* FROM leases le WHERE le.expires_at <= cutoff ORDER BY le.expires_at FOR UPDATE SKIP LOCKED LOOP
       PERFORM lease_end(l, now_ms);
       results := results || jsonb_build_array(to_jsonb(l));
     END LOOP;
     RETURN results;
   END $$;

   -- A probe's result (SPEC 4.7), the same rules as the SQLite engine: a lease whose instance
   -- restarted or holds another session is released; a free instance is clean only when it
   -- reports no session, is not shutting down, was probed after its last release, and runs
   -- another boot than the one that served the last lease (the fence). Writes only on change.
   CREATE FUNCTION lease_record_status(p_address text, p_pod text, p_boot text, p_session text, p_stopping boolean,
                                       p_started bigint, now_ms bigint) RETURNS jsonb LANGUAGE plpgsql AS $$
   DECLARE
     inst instances%ROWTYPE;
     l leases%ROWTYPE;
     leased boolean;
     released boolean := false;
     still boolean;
     v_clean boolean;
     fence text;
     released_at_v bigint;
   BEGIN
     SELECT * INTO inst FROM instances WHERE address = p_address FOR UPDATE;
     IF NOT FOUND THEN
       RETURN '{}'::jsonb;
     END IF;
     SELECT * INTO l FROM leases WHERE instance_address = p_address FOR UPDATE;
     leased := FOUND;
     IF leased AND p_started >= l.created_at
        AND ((l.instance_boot_id <> '' AND l.instance_boot_id <> p_boot) OR (p_session <> '' AND p_session <> l.session_id)) THEN
       PERFORM lease_end(l, now_ms);
       released := true;
     END IF;
     still := leased AND NOT released;
     fence := CASE WHEN released THEN l.instance_boot_id ELSE inst.fence_boot_id END;
     released_at_v := CASE WHEN released THEN now_ms ELSE inst.released_at END;
     v_clean := NOT still AND p_session = '' AND NOT p_stopping AND p_started >= released_at_v AND p_boot <> fence;
     IF released OR NOT inst.healthy OR inst.pod_name <> p_pod OR inst.boot_id <> p_boot OR (NOT still AND inst.clean <> v_clean) THEN
       UPDATE instances SET healthy = true, pod_name = p_pod, boot_id = p_boot, clean = v_clean, updated_at = now_ms
        WHERE address = p_address;
     END IF;
     RETURN jsonb_strip_nulls(jsonb_build_object(
       'released', CASE WHEN released THEN to_jsonb(l) END,
       'unknown', CASE WHEN NOT still AND p_session <> '' THEN p_session END,
       'fenced', CASE WHEN NOT still AND p_session = '' AND NOT p_stopping AND p_boot = fence THEN true END));
   END $$;`,
];

/** Advisory lock key of the migrations (any constant shared by every gateway). */
export const migrationLockKey = 0x6c656173; // "leas"
