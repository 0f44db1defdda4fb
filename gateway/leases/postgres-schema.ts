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

  // The waiting queue (SPEC 11, docs/waiting-room.md "On the lease-store port"), as in SQLite's
  // engine: entries in arrival order (`seq`, a sequence: never reused), one per session, the
  // reserved instance unique; the mean time between grants in one shared row.
  //
  // Serialisation: every transaction that grants, enters the queue or can make an instance
  // allocatable takes one advisory lock (`lease_queue_lock`) before any row lock; an
  // acquisition takes it only while entries wait (or when one of its requests would wait), so
  // allocation with an empty queue pays one read of an empty partial index. Why that is enough:
  // docs/decisions/0047-queue-lock-on-postgresql.md.
  //
  // Clocks: the queue's times (arrival, deadline, grant, purge window, heartbeats) are the
  // database's (`lease_queue_now(NULL)`), one clock for every gateway; a test passes its own.
  // Lease and instance times stay the writing gateway's, as before.
  //
  // The functions of the first migration stay as they were, so that gateways of the previous
  // version keep working during a rolling upgrade; this version calls the overloads below (one
  // more argument: the queue's clock).
  `CREATE TABLE waiters (
     seq             bigserial PRIMARY KEY,
     session_id      text NOT NULL UNIQUE,
     owner           text NOT NULL,
     gateway_id      text NOT NULL,
     ttl_ms          bigint NOT NULL,
     max_per_owner   int NOT NULL DEFAULT 0,
     enqueued_at     bigint NOT NULL,
     deadline_at     bigint NOT NULL,
     entry_position  int NOT NULL,
     granted_address text UNIQUE REFERENCES instances(address),
     granted_at      bigint
   );
   CREATE INDEX waiters_waiting ON waiters(seq) WHERE granted_address IS NULL;
   CREATE INDEX waiters_gateway ON waiters(gateway_id);
   CREATE TABLE queue_stats (
     id               int PRIMARY KEY CHECK (id = 1),
     grants           bigint NOT NULL,
     last_grant_at    bigint NOT NULL,
     mean_interval_ms double precision NOT NULL
   );
   INSERT INTO queue_stats (id, grants, last_grant_at, mean_interval_ms) VALUES (1, 0, 0, 0);

   CREATE FUNCTION lease_queue_now(q_clock bigint) RETURNS bigint LANGUAGE sql VOLATILE AS $$
     SELECT COALESCE(q_clock, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)
   $$;

   -- One lock for the queue, taken before any row lock by every transaction that takes it. The
   -- two-key form ("leas", "queu"): apart from the one-key locks of migrations and owners.
   CREATE FUNCTION lease_queue_lock() RETURNS void LANGUAGE sql VOLATILE AS $$
     SELECT pg_advisory_xact_lock(1818583411, 1903519093)
   $$;

   -- An entry as the port's QueueEntry wants it: its position among the waiting (0 once granted).
   CREATE FUNCTION lease_queue_entry(w waiters) RETURNS jsonb LANGUAGE sql STABLE AS $$
     SELECT to_jsonb(w) || jsonb_build_object('position', CASE WHEN w.granted_address IS NOT NULL THEN 0
       ELSE (SELECT count(*) FROM waiters x WHERE x.granted_address IS NULL AND x.seq < w.seq) + 1 END)
   $$;

   -- The grant (caller holds lease_queue_lock): the allocatable instance free for the longest
   -- time goes to the oldest waiting entry, then the next, until one side runs out. An entry past
   -- its deadline, or whose owner holds max_per_owner leases and reservations, stays in place.
   -- A grant is a reservation: the instance carries the waiter's session, no lease exists yet.
   -- Plain FOR UPDATE, not SKIP LOCKED: a free row locked by an acquisition in flight is waited
   -- for (and skipped once leased), never passed over while it may stay free.
   CREATE FUNCTION lease_queue_grant(now_ms bigint, q_now bigint) RETURNS int LANGUAGE plpgsql AS $$
   DECLARE
     w waiters%ROWTYPE;
     inst instances%ROWTYPE;
     st queue_stats%ROWTYPE;
     n bigint;
     waited double precision;
     granted int := 0;
   BEGIN
     FOR w IN SELECT * FROM waiters WHERE granted_address IS NULL ORDER BY seq LOOP
       CONTINUE WHEN w.deadline_at <= q_now;
       IF w.max_per_owner > 0 THEN
         PERFORM pg_advisory_xact_lock(hashtext('lease-owner:' || w.owner));
         SELECT (SELECT count(*) FROM leases WHERE owner = w.owner)
              + (SELECT count(*) FROM waiters WHERE owner = w.owner AND granted_address IS NOT NULL) INTO n;
         CONTINUE WHEN n >= w.max_per_owner;
       END IF;
       SELECT * INTO inst FROM instances WHERE session_id IS NULL AND healthy AND clean AND NOT draining
        ORDER BY free_since LIMIT 1 FOR UPDATE;
       EXIT WHEN NOT FOUND;
       UPDATE instances SET session_id = w.session_id, updated_at = now_ms WHERE address = inst.address;
       UPDATE waiters SET granted_address = inst.address, granted_at = q_now WHERE seq = w.seq;
       -- The time the head waited for this grant: since the previous grant, or since it arrived if
       -- later; an exponentially weighted mean, 0.2 for the newest (about the last ten), as SQLite's.
       SELECT * INTO st FROM queue_stats WHERE id = 1;
       waited := GREATEST(0, q_now - GREATEST(st.last_grant_at, w.enqueued_at));
       UPDATE queue_stats SET grants = grants + 1, last_grant_at = q_now,
              mean_interval_ms = CASE WHEN st.grants = 0 THEN waited ELSE st.mean_interval_ms + 0.2 * (waited - st.mean_interval_ms) END
        WHERE id = 1;
       granted := granted + 1;
     END LOOP;
     IF granted > 0 THEN
       PERFORM pg_notify('lease_queue', 'granted');
     END IF;
     RETURN granted;
   END $$;

   -- Removes entries (caller holds lease_queue_lock and chose them under it): a reservation an
   -- entry held goes back untouched (still clean, free since when it was), then the grant passes
   -- it on. Returns the entries as they were (positions before any removal).
   CREATE FUNCTION lease_queue_remove(p_seqs bigint[], now_ms bigint, q_now bigint) RETURNS jsonb LANGUAGE plpgsql AS $$
   DECLARE
     w waiters%ROWTYPE;
     removed jsonb := '[]'::jsonb;
     g int := 0;
   BEGIN
     SELECT COALESCE(jsonb_agg(lease_queue_entry(x) ORDER BY x.seq), '[]'::jsonb) INTO removed
       FROM waiters x WHERE x.seq = ANY(p_seqs);
     FOR w IN SELECT * FROM waiters WHERE seq = ANY(p_seqs) ORDER BY seq LOOP
       IF w.granted_address IS NOT NULL THEN
         UPDATE instances SET session_id = NULL, updated_at = now_ms WHERE address = w.granted_address AND session_id = w.session_id;
       END IF;
       DELETE FROM waiters WHERE seq = w.seq;
     END LOOP;
     IF jsonb_array_length(removed) > 0 THEN
       g := lease_queue_grant(now_ms, q_now);
       PERFORM pg_notify('lease_queue', 'left');
     END IF;
     RETURN jsonb_build_object('entries', removed, 'g', g);
   END $$;

   -- Group commit with the queue: a waiting request that finds no free instance enters the queue
   -- (or joins its session's entry) in the same transaction; a request that does not wait cannot
   -- pass a waiter. While entries wait, the grant runs first, under the lock.
   CREATE FUNCTION lease_acquire_batch(requests jsonb, now_ms bigint, q_clock bigint) RETURNS jsonb LANGUAGE plpgsql AS $$
   DECLARE
     r jsonb;
     results jsonb := '[]'::jsonb;
     l leases%ROWTYPE;
     inst instances%ROWTYPE;
     w waiters%ROWTYPE;
     n bigint;
     lim int;
     avoid text;
     waits boolean;
     locked boolean := false;
     q_now bigint;
     g int := 0;
   BEGIN
     IF EXISTS (SELECT 1 FROM waiters WHERE granted_address IS NULL)
        OR EXISTS (SELECT 1 FROM jsonb_array_elements(requests) x WHERE x.value ? 'w') THEN
       PERFORM lease_queue_lock();
       locked := true;
       q_now := lease_queue_now(q_clock);
       -- Older waiters first: a free instance belongs to the head of the queue.
       g := lease_queue_grant(now_ms, q_now);
     END IF;
     FOR r IN SELECT value FROM jsonb_array_elements(requests) LOOP
       waits := r ? 'w';
       SELECT * INTO l FROM leases WHERE session_id = r->>'s';
       IF FOUND THEN
         results := results || jsonb_build_array(jsonb_build_object('k', 'existing', 'l', to_jsonb(l)));
         CONTINUE;
       END IF;
       SELECT * INTO w FROM waiters WHERE session_id = r->>'s';
       IF FOUND THEN
         -- The session waits already (at most once): a waiting call joins its place (and may
         -- extend its deadline); a call that does not wait is busy, it cannot pass the queue.
         IF NOT waits THEN
           results := results || '[{"k":"busy"}]'::jsonb;
           CONTINUE;
         END IF;
         UPDATE waiters SET deadline_at = GREATEST(deadline_at, q_now + (r->'w'->>'t')::bigint),
                            max_per_owner = COALESCE((r->>'m')::int, 0)
          WHERE seq = w.seq RETURNING * INTO w;
         results := results || jsonb_build_array(jsonb_build_object('k', 'queued', 'e', lease_queue_entry(w), 'j', true));
         CONTINUE;
       END IF;
       lim := COALESCE((r->>'m')::int, 0);
       IF lim > 0 THEN
         PERFORM pg_advisory_xact_lock(hashtext('lease-owner:' || (r->>'o')));
         SELECT count(*) INTO n FROM leases WHERE owner = r->>'o';
         IF n >= lim THEN
           results := results || '[{"k":"user-limit"}]'::jsonb;
           CONTINUE;
         END IF;
       END IF;
       avoid := r->>'a';
       IF locked THEN
         SELECT * INTO inst FROM instances
          WHERE session_id IS NULL AND healthy AND clean AND NOT draining AND (avoid IS NULL OR address <> avoid)
          ORDER BY free_since LIMIT 1 FOR UPDATE;
       ELSE
         SELECT * INTO inst FROM instances
          WHERE session_id IS NULL AND healthy AND clean AND NOT draining AND (avoid IS NULL OR address <> avoid)
          ORDER BY free_since LIMIT 1 FOR UPDATE SKIP LOCKED;
       END IF;
       IF NOT FOUND THEN
         IF NOT EXISTS (SELECT 1 FROM instances WHERE healthy) THEN
           results := results || '[{"k":"unavailable"}]'::jsonb;
         ELSIF NOT waits THEN
           results := results || '[{"k":"busy"}]'::jsonb;
         ELSE
           SELECT count(*) INTO n FROM waiters;
           IF n >= (r->'w'->>'n')::bigint THEN
             results := results || jsonb_build_array(jsonb_build_object('k', 'queue-full', 'n', n));
           ELSE
             INSERT INTO waiters (session_id, owner, gateway_id, ttl_ms, max_per_owner, enqueued_at, deadline_at, entry_position)
               VALUES (r->>'s', r->>'o', r->'w'->>'g', (r->>'t')::bigint, lim, q_now, q_now + (r->'w'->>'t')::bigint,
                       (SELECT count(*) FROM waiters WHERE granted_address IS NULL) + 1)
               RETURNING * INTO w;
             results := results || jsonb_build_array(jsonb_build_object('k', 'queued', 'e', lease_queue_entry(w), 'j', false));
           END IF;
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
     RETURN jsonb_build_object('r', results, 'g', g);
   END $$;

   -- After a release or expiry that did not hold the lock, committed: an entry held back by its
   -- owner's limit may go now (the grant that skipped it may have counted the lease just ended).
   CREATE FUNCTION lease_queue_settle(p_owners text[], now_ms bigint, q_clock bigint) RETURNS int LANGUAGE plpgsql AS $$
   BEGIN
     IF NOT EXISTS (SELECT 1 FROM waiters WHERE granted_address IS NULL AND max_per_owner > 0 AND owner = ANY(p_owners)) THEN
       RETURN 0;
     END IF;
     PERFORM lease_queue_lock();
     RETURN lease_queue_grant(now_ms, lease_queue_now(q_clock));
   END $$;

   CREATE FUNCTION lease_release(p_session text, p_expect text, now_ms bigint, q_clock bigint) RETURNS jsonb LANGUAGE plpgsql AS $$
   DECLARE
     l leases%ROWTYPE;
     locked boolean := false;
     g int := 0;
   BEGIN
     IF EXISTS (SELECT 1 FROM waiters WHERE granted_address IS NULL) THEN
       PERFORM lease_queue_lock();
       locked := true;
     END IF;
     PERFORM 1 FROM instances WHERE address = (SELECT instance_address FROM leases WHERE session_id = p_session) FOR UPDATE;
     SELECT * INTO l FROM leases WHERE session_id = p_session FOR UPDATE;
     IF NOT FOUND OR (p_expect IS NOT NULL AND l.instance_address <> p_expect) THEN
       RETURN jsonb_build_object('g', 0);
     END IF;
     PERFORM lease_end(l, now_ms);
     -- The owner holds one lease less: a waiter of theirs held back by max_per_owner may go.
     IF locked THEN
       g := lease_queue_grant(now_ms, lease_queue_now(q_clock));
     END IF;
     RETURN jsonb_build_object('l', to_jsonb(l), 'g', g, 'locked', locked);
   END $$;

   CREATE FUNCTION lease_expire(cutoff bigint, now_ms bigint, q_clock bigint) RETURNS jsonb LANGUAGE plpgsql AS $$
   DECLARE
     l leases%ROWTYPE;
     results jsonb := '[]'::jsonb;
     locked boolean := false;
     g int := 0;
   BEGIN
     IF EXISTS (SELECT 1 FROM waiters WHERE granted_address IS NULL) THEN
       PERFORM lease_queue_lock();
       locked := true;
     END IF;
     FOR l IN SELECT le.* FROM leases le WHERE le.expires_at <= cutoff ORDER BY le.expires_at FOR UPDATE SKIP LOCKED LOOP
       PERFORM lease_end(l, now_ms);
       results := results || jsonb_build_array(to_jsonb(l));
     END LOOP;
     IF locked AND jsonb_array_length(results) > 0 THEN
       g := lease_queue_grant(now_ms, lease_queue_now(q_clock));
     END IF;
     RETURN jsonb_build_object('l', results, 'g', g, 'locked', locked);
   END $$;

   -- A probe's result, as in the first migration, and: a probe that started before the
   -- instance row last changed is ignored (another gateway's newer probe, a lease, a release, a
   -- grant: it may describe the process before a restart); the decision is read first without
   -- locks, and only a probe that changes something takes the queue lock, writes and grants.
   CREATE FUNCTION lease_record_status(p_address text, p_pod text, p_boot text, p_session text, p_stopping boolean,
                                       p_started bigint, now_ms bigint, q_clock bigint) RETURNS jsonb LANGUAGE plpgsql AS $$
   DECLARE
     inst instances%ROWTYPE;
     l leases%ROWTYPE;
     leased boolean;
     release_it boolean;
     still boolean;
     v_clean boolean;
     fence text;
     released_at_v bigint;
     locked boolean := false;
     g int := 0;
   BEGIN
     LOOP
       IF locked THEN
         SELECT * INTO inst FROM instances WHERE address = p_address FOR UPDATE;
       ELSE
         SELECT * INTO inst FROM instances WHERE address = p_address;
       END IF;
       IF NOT FOUND OR p_started < inst.updated_at THEN
         RETURN '{}'::jsonb;
       END IF;
       IF locked THEN
         SELECT * INTO l FROM leases WHERE instance_address = p_address FOR UPDATE;
       ELSE
         SELECT * INTO l FROM leases WHERE instance_address = p_address;
       END IF;
       leased := FOUND;
       release_it := leased AND p_started >= l.created_at
         AND ((l.instance_boot_id <> '' AND l.instance_boot_id <> p_boot) OR (p_session <> '' AND p_session <> l.session_id));
       still := leased AND NOT release_it;
       fence := CASE WHEN release_it THEN l.instance_boot_id ELSE inst.fence_boot_id END;
       released_at_v := CASE WHEN release_it THEN now_ms ELSE inst.released_at END;
       v_clean := NOT still AND p_session = '' AND NOT p_stopping AND p_started >= released_at_v AND p_boot <> fence;
       EXIT WHEN NOT (release_it OR NOT inst.healthy OR inst.pod_name <> p_pod OR inst.boot_id <> p_boot
                      OR (NOT still AND inst.clean <> v_clean));
       IF NOT locked THEN
         PERFORM lease_queue_lock();
         locked := true;
         CONTINUE;
       END IF;
       IF release_it THEN
         PERFORM lease_end(l, now_ms);
       END IF;
       UPDATE instances SET healthy = true, pod_name = p_pod, boot_id = p_boot, clean = v_clean, updated_at = now_ms
        WHERE address = p_address;
       -- The instance may have become allocatable (clean, healthy again): the oldest waiter gets it.
       g := lease_queue_grant(now_ms, lease_queue_now(q_clock));
       EXIT;
     END LOOP;
     RETURN jsonb_strip_nulls(jsonb_build_object(
       'released', CASE WHEN release_it THEN to_jsonb(l) END,
       'unknown', CASE WHEN NOT still AND p_session <> '' THEN p_session END,
       'fenced', CASE WHEN NOT still AND p_session = '' AND NOT p_stopping AND p_boot = fence THEN true END,
       'g', g));
   END $$;

   -- Healthy again or undrained: the instance may be allocatable, the grant runs under the lock.
   -- Marking it unhealthy or draining takes nothing away from a waiter: no lock.
   CREATE FUNCTION lease_set_instance(p_address text, p_healthy boolean, p_draining boolean, now_ms bigint, q_clock bigint)
     RETURNS jsonb LANGUAGE plpgsql AS $$
   DECLARE
     changed int;
     g int := 0;
   BEGIN
     IF p_healthy IS TRUE THEN
       IF NOT EXISTS (SELECT 1 FROM instances WHERE address = p_address AND NOT healthy) THEN
         RETURN jsonb_build_object('changed', false, 'g', 0);
       END IF;
       PERFORM lease_queue_lock();
     ELSIF p_draining IS FALSE THEN
       PERFORM lease_queue_lock();
     END IF;
     UPDATE instances SET healthy = COALESCE(p_healthy, healthy), draining = COALESCE(p_draining, draining), updated_at = now_ms
      WHERE address = p_address AND (p_healthy IS NULL OR healthy <> p_healthy);
     GET DIAGNOSTICS changed = ROW_COUNT;
     IF changed > 0 AND (p_healthy IS TRUE OR p_draining IS FALSE) THEN
       g := lease_queue_grant(now_ms, lease_queue_now(q_clock));
     END IF;
     RETURN jsonb_build_object('changed', changed > 0, 'g', g);
   END $$;

   -- Turns this gateway's reservations into leases (on the instance's current boot) and removes
   -- their entries; a reservation whose instance is no longer healthy, clean and undrained goes
   -- back (the entry waits again in its place) and the grant passes the instance on. Locks only
   -- when there is something to claim: most wake-ups find nothing and write nothing. For
   -- p_sessions (entries of other gateways that calls here joined): leased now, or gone; the
   -- entry is read before the lease, so a claim committed in between shows as a lease.
   CREATE FUNCTION lease_queue_claim(p_gateway text, p_sessions text[], now_ms bigint, q_clock bigint) RETURNS jsonb LANGUAGE plpgsql AS $$
   DECLARE
     w waiters%ROWTYPE;
     inst instances%ROWTYPE;
     l leases%ROWTYPE;
     claimed jsonb := '[]'::jsonb;
     leased jsonb := '[]'::jsonb;
     gone jsonb := '[]'::jsonb;
     done text[] := '{}';
     went_back boolean := false;
     s text;
     g int := 0;
   BEGIN
     IF EXISTS (SELECT 1 FROM waiters WHERE gateway_id = p_gateway AND granted_address IS NOT NULL) THEN
       PERFORM lease_queue_lock();
       FOR w IN SELECT * FROM waiters WHERE gateway_id = p_gateway AND granted_address IS NOT NULL ORDER BY seq FOR UPDATE LOOP
         SELECT * INTO inst FROM instances WHERE address = w.granted_address FOR UPDATE;
         IF FOUND AND inst.session_id = w.session_id AND inst.healthy AND inst.clean AND NOT inst.draining
            AND NOT EXISTS (SELECT 1 FROM leases WHERE session_id = w.session_id) THEN
           INSERT INTO leases (session_id, instance_address, pod_name, owner, instance_boot_id, created_at, last_activity, expires_at)
             VALUES (w.session_id, inst.address, inst.pod_name, w.owner, inst.boot_id, now_ms, now_ms, now_ms + w.ttl_ms)
             RETURNING * INTO l;
           UPDATE instances SET clean = false, updated_at = now_ms WHERE address = inst.address;
           DELETE FROM waiters WHERE seq = w.seq;
           claimed := claimed || jsonb_build_array(jsonb_build_object('lease', to_jsonb(l), 'entry', to_jsonb(w) || '{"position":0}'::jsonb));
           done := done || w.session_id;
         ELSE
           UPDATE instances SET session_id = NULL, updated_at = now_ms WHERE address = w.granted_address AND session_id = w.session_id;
           UPDATE waiters SET granted_address = NULL, granted_at = NULL WHERE seq = w.seq;
           went_back := true;
         END IF;
       END LOOP;
       IF went_back THEN
         g := lease_queue_grant(now_ms, lease_queue_now(q_clock));
       END IF;
       IF jsonb_array_length(claimed) > 0 THEN
         PERFORM pg_notify('lease_queue', 'claimed');
       END IF;
     END IF;
     FOREACH s IN ARRAY p_sessions LOOP
       CONTINUE WHEN s = ANY(done) OR EXISTS (SELECT 1 FROM waiters WHERE session_id = s);
       SELECT * INTO l FROM leases WHERE session_id = s;
       IF FOUND THEN
         leased := leased || jsonb_build_array(to_jsonb(l));
       ELSE
         gone := gone || to_jsonb(s);
       END IF;
     END LOOP;
     RETURN jsonb_build_object('claimed', claimed, 'leased', leased, 'gone', gone, 'g', g);
   END $$;

   -- Leaving: one session's entry ('session'), every entry of a gateway ('gateway'), or the
   -- entries of gateways without a heartbeat within p_live_ms and entries whose deadline passed
   -- that long ago ('stale'). Read first: nothing to remove, nothing locked or written.
   CREATE FUNCTION lease_queue_leave(p_kind text, p_key text, p_live_ms bigint, now_ms bigint, q_clock bigint)
     RETURNS jsonb LANGUAGE plpgsql AS $$
   DECLARE
     q_now bigint;
     seqs bigint[];
   BEGIN
     FOR pass IN 1..2 LOOP
       q_now := lease_queue_now(q_clock);
       SELECT array_agg(w.seq) INTO seqs FROM waiters w LEFT JOIN gateways gw ON gw.id = w.gateway_id
        WHERE CASE p_kind
                WHEN 'session' THEN w.session_id = p_key
                WHEN 'gateway' THEN w.gateway_id = p_key
                ELSE gw.id IS NULL OR gw.heartbeat_at < q_now - p_live_ms OR w.deadline_at < q_now - p_live_ms
              END;
       IF seqs IS NULL THEN
         RETURN jsonb_build_object('entries', '[]'::jsonb, 'g', 0);
       END IF;
       IF pass = 1 THEN
         PERFORM lease_queue_lock();
       END IF;
     END LOOP;
     RETURN lease_queue_remove(seqs, now_ms, q_now);
   END $$;`,
];

/** Advisory lock key of the migrations (any constant shared by every gateway). */
export const migrationLockKey = 0x6c656173; // "leas"
