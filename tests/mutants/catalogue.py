"""The mutants: one small edit each, removing one promise of DESIGN.md ("D2" is its behaviour 2)
or of a row of the semantics table in ``docs/reference/semantics.md`` ("S: fetch raises").

Each names the tests that must notice (pytest node ids, run in that order with ``-x``). Keep
snippets short, one line where it is unique in its file: when the code moves on, a snippet that
no longer matches exactly once makes the run fail loudly ("stale mutant") rather than test
nothing; refresh it then (``python -m tests.mutants --check`` lists the stale ones).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MUTANTS", "Mutant"]


@dataclass(frozen=True, slots=True)
class Mutant:
    id: str
    #: The promise it removes: ``D<n>`` (DESIGN.md behaviour n) or ``S: <row>`` (semantics).
    promise: str
    #: What the edit takes away, in a few words.
    removes: str
    #: The edited file, relative to the project root.
    file: str
    #: Text that must occur exactly once in ``file``, and what replaces it.
    before: str
    after: str
    #: The tests that must fail once the edit is made.
    tests: tuple[str, ...]


_CLIENT = "redicache_async/client/cache.py"
_LOADS = "redicache_async/client/loads.py"
_COHERENCE = "redicache_async/client/coherence.py"
_TARGET_READS = "redicache_async/client/target_reads.py"
_GATEWAY = "redicache_async/gateway.py"
_LOCKS = "redicache_async/locks.py"
_REGISTRY = "redicache_async/builder/registry.py"
_REFRESH = "redicache_async/builder/refresh.py"
_BUILDER = _REFRESH
_SCRIPTS = "redicache_async/scripts.py"
_VALUE_SCRIPTS = "redicache_async/value_scripts.py"
_LEASE_SCRIPTS = "redicache_async/lease_scripts.py"
_LUA = "redicache_async/lua.py"
_ELECTION = "redicache_async/election.py"
_LOCAL = "redicache_async/local.py"
_LISTENER = "redicache_async/listener.py"
_CLOCK = "redicache_async/clock.py"

_T_CLIENT = "tests/test_client.py"
_T_BUILDER = "tests/test_builder.py"
_T_BUILDER_PROCESSES = "tests/test_builder_processes.py"
_T_OUTAGES = "tests/faults/test_outages.py"
_T_COHERENCE = "tests/test_coherence.py"
_T_CLAIMS = "tests/test_claims.py"
_T_FAILOVER = "tests/test_failover.py"
_T_SECURITY = "tests/faults/test_security.py"
_T_HANDLE = "tests/test_handle.py"
_T_FETCH_THREADS = "tests/test_fetch_threads.py"
_T_POOL = "tests/test_pool_exhaustion.py"
_T_NODE_BREAKERS = "tests/test_node_breakers.py"
_T_STORED = "tests/test_stored.py"
_T_ENTRY = "tests/test_entry.py"
_T_EAGER = "tests/test_eager_refresh.py"
_ENTRY = "redicache_async/entry.py"
_EAGER = "redicache_async/client/eager.py"
_T_SOFT = "tests/test_soft_timeout.py"
_SOFT = "redicache_async/soft_timeout.py"
_SOFT_ROW = "S: get_or_init(..., soft_timeout=s)"
_DIRECT_ROW = "S: a Redis client whose execute_command is overridden or wrapped"
_DIRECT = "redicache_async/direct.py"
_T_DIRECT = "tests/faults/test_direct_commands.py"
_MANY = "redicache_async/client/many.py"
_MANY_WRITES = "redicache_async/client/many_writes.py"
_FENCED_WRITES = "redicache_async/client/fenced_writes.py"
_T_MANY = "tests/test_many.py"
_T_CLEAR = "tests/test_clear.py"
_T_TAGS = "tests/test_tags.py"
_BATCH = "redicache_async/client/batch_loader.py"
_T_BATCH = "tests/test_batch_loader.py"
_BATCH_ROW = "S: get_or_init_many(keys, fetch_many, ttl=)"
_BATCH_LOCKS_ROW = "S: get_or_init_many's fetch_many raises"


def _t(module: str, *names: str) -> tuple[str, ...]:
    return tuple(f"{module}::{name}" for name in names)


MUTANTS: tuple[Mutant, ...] = (
    # -- D1: local hits are local; single-flight in a process -----------------------------------
    Mutant(
        id="local-hit-skipped",
        promise="D1",
        removes="get_or_init answering from the local layer",
        file=_CLIENT,
        before="            return entry.value\n        # Past a local miss.",
        after="            pass\n        # Past a local miss.",
        tests=_t(_T_CLIENT, "test_local_hit_sends_nothing_to_redis"),
    ),
    Mutant(
        id="get-or-init-hit-ignores-deadline",
        promise="S: ttl",
        removes="get_or_init's own hit check reading the entry's deadline",
        file=_CLIENT,
        before="and local.trusted and (entry == _NEVER or entry > monotonic()):",
        after="and local.trusted:",
        tests=_t(_T_CLIENT, "test_get_or_init_does_not_answer_an_expired_local_copy"),
    ),
    Mutant(
        id="get-or-init-hit-while-deaf",
        promise="D3",
        removes="get_or_init's own hit check refusing local copies while the listener is away",
        file=_CLIENT,
        before="if entry is not None and local.trusted and (",
        after="if entry is not None and (",
        tests=_t(
            _T_CLIENT, "test_get_or_init_does_not_answer_local_copies_while_the_listener_is_away"
        ),
    ),
    Mutant(
        id="get-or-init-hit-not-marked-used",
        promise="D4",
        removes="a get_or_init hit setting its entry's reference bit (eviction by insertion order)",
        file=_CLIENT,
        before="            entry.used = True\n            return entry.value",
        after="            return entry.value",
        tests=_t(_T_CLIENT, "test_a_get_or_init_hit_spares_its_entry_from_eviction"),
    ),
    Mutant(
        id="get-or-init-hit-not-counted",
        promise="D1",
        removes="a get_or_init hit counting as a local hit",
        file=_CLIENT,
        before="            local.hits += 1\n",
        after="",
        tests=_t(_T_CLIENT, "test_get_or_init_fetches_once_then_answers_locally"),
    ),
    Mutant(
        id="single-flight-off",
        promise="D1",
        removes="concurrent callers of one key joining the running load",
        file="redicache_async/locks.py",
        before="flight = self._flights.get(key)",
        after="flight = None",
        tests=_t(_T_CLIENT, "test_concurrent_callers_share_one_read_and_one_fetch"),
    ),
    Mutant(
        id="load-settles-a-caller-that-left",
        promise="D1",
        removes="a finished load skipping the futures of callers that were cancelled (setting "
        "one raises, and the callers after it would wait forever)",
        file=_LOCKS,
        before="            if waiter.done():  # its caller gave up\n                continue\n",
        after="",
        tests=_t(_T_CLIENT, "test_caller_cancelled_does_not_cancel_the_shared_load[single]"),
    ),
    Mutant(
        id="load-cancelled-leaves-callers-waiting",
        promise="D1",
        removes="a cancelled load (aclose) ending the wait of the callers that joined it",
        file=_LOCKS,
        before=(
            "            for waiter in self.waiters:\n"
            "                waiter.cancel()\n"
            "            return\n"
        ),
        after="            return\n",
        tests=_t(
            _T_SOFT, "test_aclose_ends_a_soft_caller_without_a_copy_with_client_closed[single]"
        ),
    ),
    Mutant(
        id="load-error-not-passed-to-callers",
        promise="D1",
        removes="a failed load raising its error in every caller that joined it",
        file=_LOCKS,
        before="                waiter.set_exception(error)",
        after="                waiter.set_result(None)",
        tests=_t(
            _T_CLIENT,
            "test_fetch_error_reaches_every_waiter_releases_lock_and_keeps_old_value[single]",
        ),
    ),
    Mutant(
        id="load-keeps-callers-that-left",
        promise="D1",
        removes="a running load dropping the futures of the callers that gave up on it",
        file=_LOCKS,
        before="waiters[:] = [w for w in waiters if not w.done()]",
        after="waiters[:] = list(waiters)",
        tests=_t(
            _T_CLIENT, "test_callers_that_gave_up_on_a_load_are_not_held_while_it_runs[single]"
        ),
    ),
    Mutant(
        id="load-drops-callers-that-stay",
        promise="D1",
        removes="a running load keeping the futures of the callers still waiting for it",
        file=_LOCKS,
        before="waiters[:] = [w for w in waiters if not w.done()]",
        after="waiters[:] = [w for w in waiters if w.done()]",
        tests=_t(
            _T_CLIENT, "test_callers_that_gave_up_on_a_load_are_not_held_while_it_runs[single]"
        ),
    ),
    Mutant(
        id="woken-callers-not-waited-for",
        promise="D1",
        removes="a batch's sender, reading again first, waiting for the batch's woken callers "
        "(else its read goes alone, a round trip for one key, and theirs in another)",
        file="redicache_async/batching.py",
        before="and (self._in_flight or self._forming is not None or self._waking)",
        after="and (self._in_flight or self._forming is not None)",
        tests=(
            "tests/test_batching.py::"
            "test_the_callers_of_a_batch_that_read_again_go_together_with_its_sender",
        ),
    ),
    # -- D2: one fetch across processes -----------------------------------------------------------
    Mutant(
        id="lock-not-exclusive",
        promise="D2",
        removes="NX of the write lock: every process takes it and fetches",
        file=_VALUE_SCRIPTS,
        before="  if not redis.call('SET', lock, token, 'NX', 'PX', ttl) then return nil end",
        after="  if not redis.call('SET', lock, token, 'PX', ttl) then return nil end",
        tests=(
            *_t(_T_CLIENT, "test_waiter_is_woken_by_the_new_value_not_by_polling"),
            "tests/test_processes.py::test_cold_key_is_fetched_once_across_processes",
        ),
    ),
    Mutant(
        id="release-not-compare-and-delete",
        promise="D2",
        removes="the token check of the release: a holder that lost its lock deletes the next's",
        file=_LEASE_SCRIPTS,
        before="if redis.call('GET', KEYS[1]) == ARGV[1] then\n  redis.call('DEL', KEYS[1])",
        after="if true then\n  redis.call('DEL', KEYS[1])",
        tests=_t(_T_CLIENT, "test_a_release_deletes_only_the_holders_own_lock"),
    ),
    Mutant(
        id="release-not-announced",
        promise="D2",
        removes="the unlock event of a lock released without a value",
        file=_CLIENT,
        before="keys=[lock_key], args=[token, self._keys.channel, unlock_event(key, self._origin)]",
        after='keys=[lock_key], args=[token, "", unlock_event(key, self._origin)]',
        tests=_t(
            _T_CLIENT,
            "test_a_release_without_a_value_is_announced_once",
            "test_failed_fetch_wakes_waiters_in_other_processes_at_once",
        ),
    ),
    Mutant(
        id="release-announcement-dropped-by-script",
        promise="D2",
        removes="the PUBLISH in the release script (lock and lease releases alike)",
        file=_LEASE_SCRIPTS,
        before="if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end",
        after="",
        tests=_t(_T_CLIENT, "test_a_release_without_a_value_is_announced_once"),
    ),
    Mutant(
        id="waiter-not-woken",
        promise="D2",
        removes="waking the waiters of a key when its event arrives (polling only)",
        file=_COHERENCE,
        before="        self._wakeups.notify(event.key)",
        after="        pass",
        tests=_t(_T_CLIENT, "test_waiter_is_woken_by_the_new_value_not_by_polling"),
    ),
    Mutant(
        id="lock-watchdog-off",
        promise="S: the lock holder is slow but alive",
        removes="renewing the write lock while the fetch runs",
        file=_LOADS,
        before="async with lease.kept_alive():",
        after="async with asyncio.timeout(None):",
        tests=_t(_T_CLIENT, "test_watchdog_keeps_the_lock_of_a_fetch_slower_than_lock_ttl"),
    ),
    Mutant(
        id="renew-does-not-extend",
        promise="D2",
        removes="the PEXPIRE of a renewal (it answers success and extends nothing)",
        file=_LEASE_SCRIPTS,
        before="  return redis.call('PEXPIRE', KEYS[1], ARGV[2])",
        after="  return 1",
        tests=_t(_T_CLIENT, "test_watchdog_keeps_the_lock_of_a_fetch_slower_than_lock_ttl"),
    ),
    Mutant(
        id="write-not-fenced",
        promise="S: the holder lost its lease",
        removes="the write script's check that the writer still holds the lock",
        file=_VALUE_SCRIPTS,
        before="  if token ~= '' and redis.call('GET', lock) ~= token then return false end",
        after="",
        tests=_t(_T_CLIENT, "test_fencing_rejects_the_write_of_a_holder_that_lost_its_lock"),
    ),
    Mutant(
        id="fetch-timeout-ignored",
        promise="S: fetch runs past fetch_timeout",
        removes="the bound on a client fetch",
        file="redicache_async/fetching.py",
        before="async with asyncio.timeout(self.timeout) as deadline:",
        after="async with asyncio.timeout(None) as deadline:",
        tests=_t(_T_CLIENT, "test_fetch_timeout_bounds_a_hung_fetch"),
    ),
    Mutant(
        id="dead-holder-lock-never-expires",
        promise="S: the lock holder dies",
        removes="the expiry of the write lock (a dead holder keeps it forever)",
        file=_VALUE_SCRIPTS,
        before="  if not redis.call('SET', lock, token, 'NX', 'PX', ttl) then return nil end",
        after="  if not redis.call('SET', lock, token, 'NX') then return nil end",
        tests=(
            "tests/test_processes.py::test_lock_holder_killed_mid_fetch_is_taken_over_after_i"
            "ts_lease",
        ),
    ),
    Mutant(
        id="waiter-never-gives-up",
        promise="S: a waiter waits longer than wait_timeout",
        removes="wait_timeout: a waiter waits for the holder however long it takes",
        file=_LOADS,
        before="if remaining <= 0:",
        after="if remaining < -1e9:",
        tests=_t(_T_CLIENT, "test_wait_timeout_answers_with_an_in_process_fetch"),
    ),
    # -- D3: coherent local layers ----------------------------------------------------------------
    Mutant(
        id="value-in-events",
        promise="D3",
        removes="'never the value': the write's event carries the payload",
        file=_VALUE_SCRIPTS,
        before="redis.call('DEL', lock)\n  announce(stream, channel, prefix .. version .. '}')",
        after=(
            "redis.call('DEL', lock)\n  announce(stream, channel, "
            "prefix .. version .. ',\"d\":' .. cjson.encode(payload) .. '}')"
        ),
        tests=_t(_T_CLIENT, "test_events_carry_the_key_and_version_never_the_value"),
    ),
    Mutant(
        id="event-does-not-invalidate",
        promise="D3",
        removes="dropping the local copy when another process's write is announced",
        file=_COHERENCE,
        before="self._local.discard(key, below_version=version)",
        after="pass",
        tests=_t(_T_CLIENT, "test_invalidation_reaches_other_clients_under_both_protocols"),
    ),
    Mutant(
        id="raced-read-kept",
        promise="D3",
        removes="refusing to keep a read older than an event that arrived meanwhile",
        file=_COHERENCE,
        before="if guard.void or version < guard.min_version or expires_at is None:",
        after="if guard.void or expires_at is None:",
        tests=_t(_T_CLIENT, "test_a_read_that_raced_an_invalidation_is_not_kept"),
    ),
    Mutant(
        id="overtaken-write-kept",
        promise="D3",
        removes="refusing to keep a write's value locally when a newer event arrived in flight",
        file="redicache_async/client/fenced_writes.py",
        before="        self._remember(key, value, guard, version, size, deadline(",
        after="        self._remember(key, value, Guard(), version, size, deadline(",
        tests=_t(
            _T_COHERENCE, "test_a_write_overtaken_in_flight_by_a_newer_one_is_not_kept_locally"
        ),
    ),
    Mutant(
        id="event-key-quote-unescaped",
        promise="D3",
        removes="a key with a double quote escaped in its event (else listeners ignore it)",
        file="redicache_async/invalidation.py",
        before=""" and '"' not in text""",
        after="",
        tests=_t("tests/test_invalidation.py", "test_events_round_trip_with_any_key"),
    ),
    Mutant(
        id="event-key-backslash-unescaped",
        promise="D3",
        removes="a key with a backslash escaped in its event",
        file="redicache_async/invalidation.py",
        before=""" and "\\\\" not in text""",
        after="",
        tests=_t("tests/test_invalidation.py", "test_events_round_trip_with_any_key"),
    ),
    Mutant(
        id="event-key-control-unescaped",
        promise="D3",
        removes="a key with a control character escaped in its event",
        file="redicache_async/invalidation.py",
        before=" and text.isprintable()",
        after="",
        tests=_t(
            "tests/test_invalidation.py", "test_the_fast_decoder_reads_every_event_as_json_does"
        ),
    ),
    Mutant(
        id="reconnect-trusts-local",
        promise="D3",
        removes="treating local entries as suspect after a reconnection that could not replay",
        file=_COHERENCE,
        before="self._local.expire(stale_ttl=self._stale_ttl)\n",
        after="pass\n",
        tests=(
            *_t(_T_CLIENT, "test_reconnected_listener_flushes_when_the_gap_was_trimmed"),
            "tests/faults/test_overload.py::test_a_flood_past_the_output_buffer_limit_flushes_the"
            "_local_layer_and_recovers",
        ),
    ),
    Mutant(
        id="listener-one-reply-per-call",
        promise="D3",
        removes="taking every reply already received in one go (one per read of the socket)",
        file=_LISTENER,
        before="        while (reply := next_reply()) is not None:",
        after="        if (reply := next_reply()) is not None:",
        tests=(
            "tests/test_invalidation.py::test_a_burst_of_events_is_read_in_batches_in_order_and"
            "_whole",
        ),
    ),
    Mutant(
        id="listener-reads-through-get-message",
        promise="D3",
        removes="reading a lone event straight from the parser (a get_message call each)",
        file=_LISTENER,
        before="            read = socket_reader(pubsub)",
        after="            read = None",
        tests=("tests/test_invalidation.py::test_a_lone_event_is_read_without_a_get_message_call",),
    ),
    Mutant(
        id="fast-decoder-drops-stream-id",
        promise="D3",
        removes="the stream id of an event read without json (replay would lose its place)",
        file="redicache_async/invalidation.py",
        before="                    None if stream_id is None else stream_id.decode(),",
        after="                    None,",
        tests=("tests/test_invalidation.py::test_the_fast_decoder_reads_every_event_as_json_does",),
    ),
    Mutant(
        id="missed-events-not-replayed",
        promise="D3",
        removes="replaying the events missed while the listener was away",
        file=_LISTENER,
        before="        for event in events:\n            self._on_event(event)",
        after="        for event in events:\n            pass",
        tests=_t(_T_CLIENT, "test_reconnected_listener_replays_missed_events_from_the_stream"),
    ),
    Mutant(
        id="idle-pings-off",
        promise="D3",
        removes="the PING that checks a quiet pub/sub connection",
        file=_LISTENER,
        before="await pubsub.ping()",
        after="pass",
        tests=_t(
            "tests/test_invalidation.py", "test_idle_pings_keep_the_subscription_and_events_flow"
        ),
    ),
    Mutant(
        id="local-outlives-ttl",
        promise="S: ttl",
        removes="a written local copy's deadline from the key's TTL in Redis",
        file=_COHERENCE,
        before="return started + ttl_ms / 1000 if ttl_ms > 0 else math.inf",
        after="return math.inf",
        tests=_t(_T_CLIENT, "test_local_copy_never_outlives_the_redis_ttl"),
    ),
    Mutant(
        id="header-without-expiry",
        promise="S: ttl",
        removes="the expiry in a value's header: a reader's copy never expires",
        file=_LUA,
        before="    expires = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - 1 + ttl",
        after="    expires = 0",
        tests=_t(_T_CLIENT, "test_local_copy_never_outlives_the_redis_ttl"),
    ),
    Mutant(
        id="deadline-without-clock-offset",
        promise="S: ttl",
        removes="the server's clock offset in a read value's local deadline",
        file=_CLOCK,
        before="return expires_ms / 1000 - offset",
        after="return expires_ms / 1000",
        tests=(
            *_t(_T_STORED, "test_a_value_read_expires_locally_no_later_than_in_redis"),
            *_t(_T_CLIENT, "test_local_copy_never_outlives_the_redis_ttl"),
        ),
    ),
    Mutant(
        id="old-layout-not-counted",
        promise="S: a value in another layout",
        removes="counting a value of another layout (an older release's) as it reads as a miss",
        file=_LOADS,
        before="            self._stats.foreign_values += 1\n            return MISSING",
        after="            return MISSING",
        tests=_t(_T_STORED, "test_an_old_release_s_value_reads_as_a_counted_miss_and_is_rewritten"),
    ),
    Mutant(
        id="old-layout-in-a-batch-not-told-apart",
        promise="S: a value in another layout",
        removes="a batch's script telling a key of another type (MGET answers nil) from none",
        file=_VALUE_SCRIPTS,
        before="  if not r and redis.call('TYPE', KEYS[i])['ok'] ~= 'none' then out[i] = 0 end",
        after="",
        tests=_t(_T_STORED, "test_an_old_release_s_value_in_a_batch_of_reads_is_a_counted_miss"),
    ),
    Mutant(
        id="old-layout-is-an-error",
        promise="S: a value in another layout",
        removes="a lone read of an older release's value (a hash: WRONGTYPE) reading as a miss",
        file=_SCRIPTS,
        before='if str(exc).startswith("WRONGTYPE"):',
        after="if False:",
        tests=_t(_T_STORED, "test_an_old_release_s_value_reads_as_a_counted_miss_and_is_rewritten"),
    ),
    Mutant(
        id="no-stale-window",
        promise="D3",
        removes="keeping an expired entry for stale_ttl, for fail-safe use",
        file=_LOCAL,
        before="stale_until = expires_at + stale_ttl if not math.isinf(expires_at) else expires_at",
        after="stale_until = expires_at",
        tests=(
            "tests/test_local.py::test_stale_window_keeps_an_expired_entry_for_fail_safe_use_only",
        ),
    ),
    # -- D4: bounded memory -----------------------------------------------------------------------
    Mutant(
        id="entries-unbounded",
        promise="D4",
        removes="the bound on local entries",
        file=_LOCAL,
        before="while len(self.entries) > self.max_entries or self.bytes > self.max_bytes:",
        after="while self.bytes > self.max_bytes:",
        tests=("tests/test_local.py::test_lru_evicts_least_recently_used_beyond_max_entries",),
    ),
    Mutant(
        id="bytes-unbounded",
        promise="D4",
        removes="the bound on local bytes",
        file=_LOCAL,
        before="while len(self.entries) > self.max_entries or self.bytes > self.max_bytes:",
        after="while len(self.entries) > self.max_entries:",
        tests=("tests/test_local.py::test_bytes_bound_evicts_until_it_fits",),
    ),
    Mutant(
        id="lru-is-fifo",
        promise="D4",
        removes="marking a hit as recently used (the reference bit: eviction by insertion order)",
        file=_LOCAL,
        before="        entry.used = True\n        return entry",
        after="        return entry",
        tests=(
            "tests/test_local.py::test_lru_evicts_least_recently_used_beyond_max_entries",
            "tests/test_local.py::test_entries_read_during_a_scan_of_cold_keys_outlive_the_cold_ones",
        ),
    ),
    Mutant(
        id="clock-never-spares",
        promise="D4",
        removes="the eviction hand sparing an entry read since it last passed",
        file=_LOCAL,
        before="            if candidate.used or candidate is spare:",
        after="            if candidate is spare:",
        tests=(
            "tests/test_local.py::test_entries_read_during_a_scan_of_cold_keys_outlive_the_cold_ones",
        ),
    ),
    Mutant(
        id="clock-evicts-the-new-entry",
        promise="D4",
        removes="keeping the entry being put when every other entry was read",
        file=_LOCAL,
        before="            if candidate.used or candidate is spare:",
        after="            if candidate.used:",
        tests=(
            "tests/test_local.py::test_the_entry_being_put_is_kept_even_when_every_other_one_was_read",
        ),
    ),
    Mutant(
        id="clock-dead-slot-evicts-live-entry",
        promise="D4",
        removes="telling a dead ring slot (a replaced entry) from the key's live entry",
        file=_LOCAL,
        before="            if entries.get(key) is not candidate:",
        after="            if key not in entries:",
        tests=(
            "tests/test_local.py::test_a_replaced_entry_leaves_a_dead_slot_that_never_evicts_its_successor",
        ),
    ),
    Mutant(
        id="flush-forgets-recency",
        promise="D4",
        removes="an expired entry's copy keeping its reference bit (a flush reorders eviction)",
        file=_LOCAL,
        before="        copy.used = entry.used\n",
        after="",
        tests=(
            "tests/test_local.py::test_expired_entries_keep_their_place_in_eviction_and_the_counts"
            "_stay_right",
        ),
    ),
    Mutant(
        id="expired-entry-stays-fresh",
        promise="S: ttl",
        removes="a local hit checking the entry's deadline",
        file=_LOCAL,
        before="        if entry != _NEVER and entry <= monotonic():",
        after="        if False:",
        tests=(
            "tests/test_local.py::test_expired_entry_is_a_miss_and_is_dropped_without_a_stale_window",
        ),
    ),
    Mutant(
        id="clock-ring-grows",
        promise="D4",
        removes="compacting the eviction ring when dead slots outnumber live entries",
        file=_LOCAL,
        before="        if len(ring) > 2 * len(self.entries) + _RING_SLACK:",
        after="        if False:",
        tests=(
            "tests/test_local.py::test_dead_slots_of_dropped_and_replaced_keys_do_not_grow_the_ring",
        ),
    ),
    # -- D5: Redis outages ------------------------------------------------------------------------
    Mutant(
        id="outage-read-raises",
        promise="S: Redis unreachable",
        removes="answering reads without Redis (local, stale, in-process fetch)",
        file=_LOADS,
        before="                return UNREACHABLE\n",
        after="                raise\n",
        tests=_t(_T_OUTAGES, "test_new_key_with_redis_dead_is_fetched_in_process_then_converges"),
    ),
    Mutant(
        id="replica-read-with-get",
        promise="S: a failover loses writes",
        removes="reading with a plain GET only once the server is known to be a master",
        file=_CLIENT,
        before='self._plain_reads = text(role[0]) == "master"',
        after="self._plain_reads = True",
        tests=_t(_T_FAILOVER, "test_reads_are_refused_by_a_replica_not_answered_as_no_value"),
    ),
    Mutant(
        id="outage-script-read-raises",
        promise="S: Redis unreachable",
        removes="answering without Redis when a read's script fails (a replica refuses it; a "
        "client whose listener cannot subscribe there reads the clear time first, by script)",
        file=_COHERENCE,
        before="        except RedisUnavailableError:\n"
        "            breakers = self._gateway.breaker\n",
        after="        except RedisUnavailableError:\n            raise\n",
        tests=_t(_T_FAILOVER, "test_reads_are_refused_by_a_replica_not_answered_as_no_value"),
    ),
    Mutant(
        id="redis-call-unbounded",
        promise="S: Redis unreachable",
        removes="redis_timeout on the client's commands",
        file=_GATEWAY,
        before="result = await bounded(command, timeout)",
        after="result = await command",
        tests=_t(_T_OUTAGES, "test_a_paused_server_does_not_hang_callers"),
    ),
    Mutant(
        id="breaker-never-opens",
        promise="D5",
        removes="the circuit breaker opening after failures in a row",
        file="redicache_async/breaker.py",
        before="if self._failures < self._threshold:",
        after="if True:",
        tests=_t(_T_OUTAGES, "test_a_dead_server_trips_the_breaker_so_calls_stop_trying_it"),
    ),
    Mutant(
        id="breaker-keeps-failures-when-closed",
        promise="D5",
        removes="the breaker starting afresh after it closes: failures counted before still count",
        file="redicache_async/breaker.py",
        before="        self._failures = 0\n        self._window = self._first_window",
        after="        self._window = self._first_window",
        tests=("tests/test_breaker.py::test_close_starts_afresh",),
    ),
    Mutant(
        id="breaker-keeps-window-when-closed",
        promise="D5",
        removes="the breaker starting afresh after it closes: the next outage's window stays long",
        file="redicache_async/breaker.py",
        before="        self._failures = 0\n        self._window = self._first_window",
        after="        self._failures = 0",
        tests=("tests/test_breaker.py::test_close_starts_afresh",),
    ),
    Mutant(
        id="outage-value-never-rechecked",
        promise="D5",
        removes="converging on Redis's value: a value fetched without Redis stays fresh",
        file=_COHERENCE,
        before="fresh_until = started + _UNSHARED_FRESHNESS if version == 0 else math.inf",
        after="fresh_until = math.inf",
        tests=_t(_T_OUTAGES, "test_a_value_fetched_during_a_short_freeze_gives_way_to_redis_s"),
    ),
    Mutant(
        id="pool-exhaustion-taken-for-outage",
        promise="S: connection pool exhausted",
        removes="telling an exhausted pool (Redis untried) from an outage: it counts towards the "
        "breaker and reads answer as without Redis",
        file=_GATEWAY,
        before="            if pool_exhausted(exc):",
        after="            if False:",
        tests=_t(
            _T_POOL,
            "test_a_full_cluster_node_pool_raises_pool_exhausted_at_once",
            "test_many_callers_on_a_tiny_pool_all_get_redis_answers",
        ),
    ),
    Mutant(
        id="pool-exhaustion-not-waited-for",
        promise="S: connection pool exhausted",
        removes="waiting within redis_timeout for a connection of a full pool",
        file=_GATEWAY,
        before="        if room is not None and not room():",
        after="        if False:",
        tests=_t(_T_POOL, "test_a_call_waits_for_a_connection_and_then_gets_redis_answer"),
    ),
    Mutant(
        id="breaker-one-per-cluster-client",
        promise="S: a cluster master dies",
        removes="a breaker per cluster master: a dead master's failures skip every slot's calls",
        file="redicache_async/breaker.py",
        before="        if not self._cluster or key is None:",
        after="        if True:",
        tests=_t(_T_NODE_BREAKERS, "test_a_dead_master_costs_only_its_own_slots"),
    ),
    Mutant(
        id="deaf-read-waits-for-the-clear-time",
        promise="S: a cluster master dies",
        removes="reading a healthy master's keys while the clear time's master is dead and the "
        "listener cannot subscribe (every read would answer as without Redis)",
        file=_COHERENCE,
        before="            return breakers.for_key(self._keys.cleared) is not "
        "breakers.for_key(value_key)\n",
        after="            return False\n",
        tests=_t(_T_NODE_BREAKERS, "test_a_dead_master_costs_only_its_own_slots"),
    ),
    Mutant(
        id="breaker-of-a-former-master-kept",
        promise="S: a cluster master dies",
        removes="dropping the breakers of nodes that are no longer masters when the slot map "
        "changes (a node back and promoted again would start with its old open breaker)",
        file="redicache_async/breaker.py",
        before="        if current is not self._map:",
        after="        if False:",
        tests=_t(_T_NODE_BREAKERS, "test_a_dead_master_costs_only_its_own_slots"),
    ),
    Mutant(
        id="refusal-taken-for-outage",
        promise="S: Redis refuses the client",
        removes="telling a refusal (password, ACL) from an outage",
        file=_GATEWAY,
        before='raise RedisPermissionError(f"Redis refused this client:',
        after='raise RedisUnavailableError(f"Redis refused this client:',
        tests=(
            "tests/faults/test_security.py::test_acl_user_is_refused_outside_its_namespace_an"
            "d_targets",
        ),
    ),
    # -- semantics rows of the fetch ------------------------------------------------------------
    Mutant(
        id="async-fetch-in-a-thread",
        promise="S: fetch is an async def",
        removes="awaiting coroutine functions (they would be run in a thread)",
        file="redicache_async/fetching.py",
        before="    if is_async_callable(fetch):",
        after="    if False:",
        tests=_t(_T_CLIENT, "test_each_kind_of_fetch_is_called_as_the_readme_says"),
    ),
    Mutant(
        id="sync-fetch-on-the-loop",
        promise="S: fetch is a plain function",
        removes="running plain functions in a worker thread",
        file="redicache_async/fetching.py",
        before='            result = await _in_thread(f"{THREAD_NAME}:{name}", call)',
        after="            result = call()",
        tests=_t(_T_CLIENT, "test_each_kind_of_fetch_is_called_as_the_readme_says"),
    ),
    Mutant(
        id="coroutine-result-accepted",
        promise="S: a plain function returns a coroutine",
        removes="refusing a coroutine returned by a plain function",
        file="redicache_async/fetching.py",
        before="    if inspect.isawaitable(result):",
        after="    if False:",
        tests=_t(_T_CLIENT, "test_each_kind_of_fetch_is_called_as_the_readme_says"),
    ),
    Mutant(
        id="none-keeps-the-lock",
        promise="S: fetch returns None",
        removes="releasing the lock when the fetch returns None",
        file=_LOADS,
        before=(
            "            if value is None:\n"
            "                await self._locks.release(key, lease.key, lease.token)\n"
            "                return None"
        ),
        after=("            if value is None:\n                return None"),
        tests=_t(_T_CLIENT, "test_none_is_returned_but_not_cached"),
    ),
    Mutant(
        id="failure-keeps-the-lock",
        promise="S: fetch raises",
        removes="releasing the lock when the fetch raises",
        file=_LOADS,
        before=(
            "        except BaseException:\n"
            "            await self._locks.release(key, lease.key, lease.token)\n"
            "            raise"
        ),
        after=("        except BaseException:\n            raise"),
        tests=_t(
            _T_CLIENT, "test_fetch_error_reaches_every_waiter_releases_lock_and_keeps_old_value"
        ),
    ),
    Mutant(
        id="failure-not-served-stale",
        promise="S: fetch raises",
        removes="answering a failed fetch with the stale copy within stale_ttl",
        file=_LOADS,
        before=(
            "                stale = self._local.stale(key)\n"
            "                if stale is None:\n"
            "                    raise"
        ),
        after="                raise",
        tests=_t(_T_OUTAGES, "test_an_expired_value_is_served_stale_when_its_fetch_fails"),
    ),
    Mutant(
        id="regeneration-serves-stale",
        promise="S: fetch raises",
        removes="attempt_regeneration always raising (it would answer with the stale copy)",
        file=_LOADS,
        before="claimed=claimed, fail_safe=False",
        after="claimed=claimed, fail_safe=True",
        tests=_t(_T_OUTAGES, "test_an_expired_value_is_served_stale_when_its_fetch_fails"),
    ),
    Mutant(
        id="fetcher-gets-the-raw-value",
        promise="S: values",
        removes="giving the fetching process the JSON round-tripped value, as the others get",
        file=_FENCED_WRITES,
        before=(
            "            canonical = self._serializer.loads(payload)\n        except BaseException:"
        ),
        after="            canonical = value\n        except BaseException:",
        tests=_t(_T_CLIENT, "test_values_are_json_round_tripped_the_same_in_every_process"),
    ),
    Mutant(
        id="undecodable-not-counted",
        promise="S: a value in Redis that cannot be decoded",
        removes="counting undecodable values in stats().decode_errors",
        file=_LOADS,
        before='        self._stats.decode_errors += 1\n        logger.warning("the value',
        after='        logger.warning("the value',
        tests=_t(_T_CLIENT, "test_undecodable_value_in_redis_is_a_miss_and_is_refetched"),
    ),
    Mutant(
        id="long-keys-accepted",
        promise="S: keys",
        removes="the 1,024-byte bound on keys",
        file="redicache_async/keys.py",
        before='raise InvalidArgumentError(f"key is longer than {MAX_KEY_BYTES} bytes")',
        after="pass",
        tests=_t(_T_CLIENT, "test_bad_arguments_raise_clear_errors_and_write_nothing"),
    ),
    # -- D6: builder leadership -------------------------------------------------------------------
    Mutant(
        id="leader-lease-not-exclusive",
        promise="D6",
        removes="NX of the leader lease: every instance leads",
        file=_LEASE_SCRIPTS,
        before="if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then",
        after="if not redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) then",
        tests=_t(_T_BUILDER, "test_one_leader_per_name_and_a_closed_leader_is_replaced_at_once"),
    ),
    Mutant(
        id="one-lease-for-every-registration",
        promise="D6",
        removes="one lease per registration (one leader would build every registration)",
        file="redicache_async/keys.py",
        before='return f"{self.namespace}:builder:{{{name}}}:lease"',
        after='return f"{self.namespace}:builder:{{leader}}:lease"',
        tests=_t(_T_BUILDER, "test_registrations_spread_across_instances"),
    ),
    Mutant(
        id="renewal-not-strict",
        promise="D6",
        removes="strict renewal: a leader whose renewal fails carries on until its lease ends",
        file=_REFRESH,
        before="async with lease.kept_alive(strict=True, on_lost=on_lost):",
        after="async with lease.kept_alive(strict=False, on_lost=on_lost):",
        tests=_t(_T_BUILDER, "test_a_failed_renewal_stops_the_build_at_once"),
    ),
    Mutant(
        id="lost-lease-build-goes-on",
        promise="D6",
        removes="cancelling the build in flight when the lease is lost",
        file=_REFRESH,
        before="            scope.reschedule(loop.time())",
        after="            pass",
        tests=_t(_T_BUILDER, "test_a_failed_renewal_stops_the_build_at_once"),
    ),
    Mutant(
        id="close-keeps-the-lease",
        promise="D6",
        removes="releasing the lease when a leader stops",
        file=_REFRESH,
        before="            await self._leadership.resign(lease)",
        after="            pass",
        tests=_t(_T_BUILDER, "test_one_leader_per_name_and_a_closed_leader_is_replaced_at_once"),
    ),
    Mutant(
        id="resign-not-announced",
        promise="D6",
        removes="announcing a released lease, so that a follower takes over at once",
        file=_ELECTION,
        before="lease.release(channel=self._electorate.keys.builder_channel, event=event)",
        after="lease.release()",
        tests=_t(_T_BUILDER, "test_one_leader_per_name_and_a_closed_leader_is_replaced_at_once"),
    ),
    Mutant(
        id="follower-deaf-to-resign",
        promise="D6",
        removes="a follower campaigning as soon as a release is announced",
        file=_REGISTRY,
        before="            registration.wake.set()  # the lease is free: try to take it now",
        after="            pass",
        tests=_t(_T_BUILDER, "test_one_leader_per_name_and_a_closed_leader_is_replaced_at_once"),
    ),
    Mutant(
        id="follower-ignores-lease-expiry",
        promise="D6",
        removes="a follower asking again as soon as the lease expires (crashed leader)",
        file=_ELECTION,
        before="pause = pttl / 1000 + _EXPIRY_MARGIN if pttl >= 0 else self._electorate.lease_ttl",
        after="pause = self._electorate.lease_ttl",
        tests=_t(_T_BUILDER, "test_a_crashed_leaders_lease_is_taken_as_soon_as_it_expires"),
    ),
    Mutant(
        id="takeover-rebuilds-fresh-data",
        promise="D6",
        removes="continuing the schedule on takeover: a new leader builds at once",
        file=_REFRESH,
        before="if elected.built_at_ms is not None and elected.spec == describe(",
        after="if False and elected.spec == describe(",
        tests=_t(_T_BUILDER, "test_a_new_leader_continues_the_schedule_instead_of_rebuilding"),
    ),
    Mutant(
        id="takeover-restarts-the-interval",
        promise="D6",
        removes="continuing the schedule on takeover: the interval restarts at the takeover",
        file=_REFRESH,
        before="self._last_started = loop.time() - age",
        after="self._last_started = loop.time()",
        tests=(
            *_t(_T_BUILDER, "test_a_new_leader_continues_the_schedule_instead_of_rebuilding"),
            *_t(_T_BUILDER_PROCESSES, "test_closed_leader_hands_over_at_once"),
        ),
    ),
    Mutant(
        id="build-done-before-recorded",
        promise="D6",
        removes="recording a build before it counts as done: a close right after cuts the record",
        file=_REFRESH,
        before="""        await self._leadership.record(
            lease,
            interval=spec.refresh_interval,
            duration=duration,
            spec=describe(spec.targets),
        )
        self.builds += 1
""",
        after="""        self.builds += 1
        await self._leadership.record(
            lease,
            interval=spec.refresh_interval,
            duration=duration,
            spec=describe(spec.targets),
        )
""",
        tests=_t(_T_BUILDER, "test_a_build_counts_as_done_once_its_record_is_written"),
    ),
    Mutant(
        id="swap-ignores-the-lease",
        promise="D6",
        removes="the swap's check that the writer still holds the lease",
        file=_LEASE_SCRIPTS,
        before="if ARGV[1] ~= '' and redis.call('GET', KEYS[3*n+1]) ~= ARGV[1] then",
        after="if false then",
        tests=_t(_T_BUILDER, "test_a_deposed_leader_cannot_swap_even_before_its_successor_builds"),
    ),
    Mutant(
        id="swap-ignores-the-epoch",
        promise="D6",
        removes="the swap's check of the epoch beside each target",
        file=_LEASE_SCRIPTS,
        before="if last and last > epoch then return {0, 'a newer leader has written '",
        after="if false then return {0, 'a newer leader has written '",
        tests=_t(_T_BUILDER, "test_the_swap_refuses_an_epoch_older_than_the_targets"),
    ),
    # -- D7: zero-downtime rebuilds ---------------------------------------------------------------
    Mutant(
        id="hash-id-unchecked",
        promise="D7",
        removes="refusing an item whose id_field is not a string or a number",
        file="redicache_async/targets.py",
        before="    if isinstance(value, bool) or not isinstance(value, str | int | float):",
        after="    if False:",
        tests=_t(_T_BUILDER, "test_a_result_that_does_not_fit_keeps_the_old_data"),
    ),
    Mutant(
        id="failed-build-not-reported",
        promise="D7",
        removes="reporting a failed build in status().last_error",
        file=_REFRESH,
        before="            self._last_error = describe_error(exc)\n",
        after="",
        tests=_t(_T_BUILDER, "test_a_fetch_that_raises_keeps_the_old_data_and_is_retried"),
    ),
    Mutant(
        id="swap-takes-an-incomplete-copy",
        promise="D7",
        removes="the swap's check that every temporary copy is complete",
        file=_LEASE_SCRIPTS,
        before="  if want > 0 and (redis.call('TYPE', temp)['ok'] ~= kind",
        after="  if false and (redis.call('TYPE', temp)['ok'] ~= kind",
        tests=_t(_T_BUILDER, "test_an_incomplete_copy_is_never_swapped_in"),
    ),
    # -- D8: cluster-safe keys --------------------------------------------------------------------
    Mutant(
        id="lock-without-hash-tag",
        promise="D8",
        removes="the hash tag that puts a value's lock in the value's slot",
        file="redicache_async/keys.py",
        before='return f"{self.namespace}:lock:{_tagged(key)}"',
        after='return f"{self.namespace}:lock:{key}"',
        tests=_t(_T_CLIENT, "test_keys_with_braces_keep_value_and_lock_in_one_slot"),
    ),
    Mutant(
        id="target-meta-in-another-slot",
        promise="D8",
        removes="the hash tag that puts a target's meta hash in the target's slot",
        file="redicache_async/keys.py",
        before='return f"{self.namespace}:target:{{{slot_tag(target)}}}{target}"',
        after='return f"{self.namespace}:target:{target}"',
        tests=_t(_T_BUILDER, "test_keys_the_builder_writes_beside_targets_share_their_slot"),
    ),
    # -- D9: lifecycles ---------------------------------------------------------------------------
    Mutant(
        id="client-close-leaves-the-listener",
        promise="D9",
        removes="the client's close stopping its listener",
        file=_CLIENT,
        before=("        await self._listener.aclose()\n        await self._locks.aclose("),
        after="        await self._locks.aclose(",
        tests=_t(_T_CLIENT, "test_aclose_leaves_no_task_and_no_connection"),
    ),
    Mutant(
        id="load-started-after-close",
        promise="D9",
        removes="the task group refusing work once the client is closed",
        file="redicache_async/tasks.py",
        before="        if self._closed:\n            coro.close()",
        after="        if False:\n            coro.close()",
        tests=_t(
            "tests/test_tasks.py",
            "test_a_task_is_refused_once_the_group_is_closed_and_its_coroutine_never_runs",
        ),
    ),
    Mutant(
        id="command-sent-after-close",
        promise="D9",
        removes="the sealed client refusing to send a command (a read retried after close)",
        file=_GATEWAY,
        before="        if self._sealed:\n            command.close()",
        after="        if False:\n            command.close()",
        tests=_t(_T_CLAIMS, "test_a_read_retried_after_close_is_not_sent"),
    ),
    Mutant(
        id="regeneration-outlives-its-caller",
        promise="D9",
        removes="a cancelled attempt_regeneration waiting for its task's clean-up",
        file=_CLIENT,
        before=(
            "            await cancel_and_wait(task)  # its clean-up (releasing the lock)"
            " ends first"
        ),
        after="            task.cancel()",
        tests=_t(
            _T_CLAIMS,
            "test_a_regeneration_cancelled_during_its_fetch_releases_and_announces_the_lock",
        ),
    ),
    Mutant(
        id="builder-close-leaves-the-loops",
        promise="D9",
        removes="the builder's close stopping its refresh loops",
        file=_REGISTRY,
        before=(
            "        await asyncio.gather(*(registration.stop(closing=True) for registration in "
            "registrations))\n        await self._tasks.aclose()\n"
        ),
        after="",
        tests=_t(_T_BUILDER, "test_close_releases_every_lease_and_leaves_nothing_running"),
    ),
    Mutant(
        id="builder-calls-outlive-close",
        promise="D9",
        removes="calls waiting on a registration ending when it stops",
        file=_REFRESH,
        before="        self._stopped.set()\n",
        after="",
        tests=_t(
            _T_BUILDER,
            "test_calls_waiting_on_a_builder_end_with_client_closed_when_it_closes",
            "test_unregistering_ends_a_wait_for_the_first_build_with_a_build_error",
        ),
    ),
    # -- D10: no write is undone (lease invalidation) --------------------------------------------
    Mutant(
        id="set-keeps-the-lock",
        promise="D10",
        removes="an unlocked write revoking the key's lock",
        file=_VALUE_SCRIPTS,
        before="  redis.call('DEL', lock)\n  announce",
        after="  if token ~= '' then redis.call('DEL', lock) end\n  announce",
        tests=_t(
            _T_COHERENCE,
            "test_a_fetch_that_started_before_a_change_never_stores_its_result[single-set]",
        ),
    ),
    Mutant(
        id="delete-keeps-the-lock",
        promise="D10",
        removes="a delete revoking the key's lock",
        file=_VALUE_SCRIPTS,
        before="redis.call('DEL', value, lock)",
        after="redis.call('DEL', value)",
        tests=_t(
            _T_COHERENCE,
            "test_a_fetch_that_started_before_a_change_never_stores_its_result[single-delete]",
        ),
    ),
    Mutant(
        id="write-leaves-older-reads-unguarded",
        promise="D10",
        removes="a write raising the guards of this process's reads in flight",
        file=_COHERENCE,
        before=(
            "            if version > guard.min_version:\n"
            "                guard.min_version = version\n"
            "        self._loads.detach(key)"
        ),
        after="            pass\n        self._loads.detach(key)",
        tests=_t(
            _T_COHERENCE,
            "test_a_reply_older_than_this_process_s_write_is_not_kept_while_the_listener_lags",
        ),
    ),
    Mutant(
        id="write-leaves-the-load-attached",
        promise="D10",
        removes="a write detaching the load of the key that started before it",
        file=_COHERENCE,
        before="                guard.min_version = version\n        self._loads.detach(key)\n",
        after="                guard.min_version = version\n",
        tests=_t(
            _T_COHERENCE,
            "test_a_change_in_the_same_process_is_not_undone_by_its_running_load[single-delete]",
        ),
    ),
    Mutant(
        id="write-leaves-the-read-joinable",
        promise="D10",
        removes="a write making later reads send their own instead of joining an older one",
        file=_COHERENCE,
        before=(
            "        self._values.forget(key)\n"
            "        self._headed_values.forget(key)\n\n    def _write_unknown"
        ),
        after="        self._headed_values.forget(key)\n\n    def _write_unknown",
        tests=_t(
            _T_COHERENCE, "test_a_read_in_flight_before_a_write_is_not_joined_after_it[single-0]"
        ),
    ),
    Mutant(
        id="event-leaves-the-load-attached",
        promise="D10",
        removes="another process's write detaching this process's running load",
        file=_COHERENCE,
        before=(
            "            self._loads.detach(event.key)\n            self._values.forget(event.key)"
        ),
        after="            pass",
        tests=_t(_T_COHERENCE, "test_a_change_elsewhere_detaches_this_process_s_running_load"),
    ),
    Mutant(
        id="flush-leaves-loads-joinable",
        promise="D10",
        removes="a flush detaching the loads and reads a missed write may have overtaken",
        file=_COHERENCE,
        before=(
            "        self._loads.detach_all()\n        self._reads.detach_all()\n"
            "        self._values.forget_all()\n"
        ),
        after="",
        tests=_t(_T_COHERENCE, "test_a_flush_detaches_the_loads_a_missed_write_may_have_overtaken"),
    ),
    Mutant(
        id="local-version-goes-backwards",
        promise="D10",
        removes="the local layer refusing a put older than its fresh entry",
        file=_LOCAL,
        before="            return False  # never backwards: the newer entry stays",
        after="            pass",
        tests=_t(
            "tests/test_local.py",
            "test_a_put_never_replaces_a_fresh_entry_with_an_older_version",
        ),
    ),
    # -- D3: a listener away, a failover no listener hears ----------------------------------------
    Mutant(
        id="local-trusted-while-deaf",
        promise="D3",
        removes="local copies not being answers while the listener is away",
        file=_LOCAL,
        before="        if entry is None or not self.trusted:",
        after="        if entry is None:",
        tests=_t(
            _T_COHERENCE,
            "test_local_copies_are_not_answers_while_the_listener_is_away[single]",
            "test_a_listener_refused_its_channel_cannot_keep_local_copies_fresh[single]",
        ),
    ),
    Mutant(
        id="listener-loss-not-reported",
        promise="D3",
        removes="the listener telling its owner that its connection is lost",
        file=_LISTENER,
        before=(
            "    def _lost(self) -> None:\n        self.connected = False\n"
            "        self._on_lost()\n"
        ),
        after="    def _lost(self) -> None:\n        self.connected = False\n",
        tests=(
            *_t(
                _T_COHERENCE,
                "test_a_listener_refused_its_channel_cannot_keep_local_copies_fresh[single]",
            ),
            "tests/faults/test_network.py::test_a_silent_partition_ends_local_freshness_withi"
            "n_the_detection_bound",
        ),
    ),
    Mutant(
        id="trust-never-restored",
        promise="D3",
        removes="the local layer trusted again once the listener has caught up",
        file=_COHERENCE,
        before="        self._local.trusted = True\n        self._wakeups.notify_all()",
        after="        self._wakeups.notify_all()",
        tests=_t(
            _T_COHERENCE,
            "test_a_listener_refused_its_channel_cannot_keep_local_copies_fresh[single]",
        ),
    ),
    Mutant(
        id="cluster-failover-unwatched",
        promise="S: a failover loses writes",
        removes="the watch of the cluster's epoch",
        file=_CLIENT,
        before=(
            '            self._tasks.spawn(self._failovers.run(), name="redicache-failover-watch")'
        ),
        after="            pass",
        tests=_t(
            _T_FAILOVER,
            "test_a_write_lost_in_a_cluster_failover_is_not_served_from_local_layers",
        ),
    ),
    # -- D11: every claim is released -------------------------------------------------------------
    Mutant(
        id="refused-write-keeps-the-lock",
        promise="D11",
        removes="releasing the lock when the server refuses the fenced write",
        file=_FENCED_WRITES,
        before=(
            "            # be left to expire while others wait on it.\n"
            "            await self._locks.release(key, lease.key, lease.token)"
        ),
        after=("            # be left to expire while others wait on it.\n            pass"),
        tests=_t(_T_CLAIMS, "test_a_refused_write_releases_and_announces_the_lock"),
    ),
    Mutant(
        id="regeneration-claim-on-the-wire-kept",
        promise="D11",
        removes="remembering a regeneration's claim cancelled with its reply on the wire",
        file=_LOADS,
        before=(
            "            except asyncio.CancelledError:\n"
            "                self._locks.orphans.add(key, lease.key, lease.token)  # the claim"
            " may have run"
        ),
        after="            except asyncio.CancelledError:\n                pass",
        tests=_t(
            _T_CLAIMS,
            "test_a_regeneration_cancelled_while_its_claim_is_on_the_wire_releases_it",
        ),
    ),
    Mutant(
        id="load-claim-on-the-wire-kept",
        promise="D11",
        removes="remembering a load's claim cancelled (by aclose) with its reply on the wire",
        file=_LOADS,
        before=(
            "                    except asyncio.CancelledError:\n"
            "                        self._locks.orphans.add(key, lock_key, token)  # the claim"
            " may have run"
        ),
        after="                    except asyncio.CancelledError:\n                        pass",
        tests=_t(_T_CLAIMS, "test_aclose_while_a_claim_is_on_the_wire_leaves_no_lock"),
    ),
    Mutant(
        id="close-skips-the-last-releases",
        promise="D11",
        removes="aclose() releasing the remembered claims before it returns",
        file=_CLIENT,
        before="await self._locks.aclose(last_round=self._redis_timeout)",
        after="await self._locks.aclose(last_round=0.0)",
        tests=_t(_T_CLAIMS, "test_aclose_while_a_claim_is_on_the_wire_leaves_no_lock"),
    ),
    Mutant(
        id="campaign-on-the-wire-kept",
        promise="D11",
        removes="remembering a builder's campaign cancelled with its reply on the wire",
        file=_ELECTION,
        before=(
            "            except asyncio.CancelledError:\n"
            "                self._locks.unanswered(None, self._name, lease.key, lease.token)"
            "  # it may have run"
        ),
        after="            except asyncio.CancelledError:\n                pass",
        tests=_t(
            _T_CLAIMS,
            "test_a_builder_closed_while_its_campaign_is_on_the_wire_leaves_no_lease",
        ),
    ),
    Mutant(
        id="write-script-half-applied",
        promise="S: ttl",
        removes="the write script checking its ttl before it writes anything",
        file=_VALUE_SCRIPTS,
        before='    + _CHECK_TTL.format(ttl_arg="ARGV[3]")',
        after='    + "local ttl = tonumber(ARGV[3]) or 0"',
        tests=_t(
            _T_CLAIMS,
            "test_the_write_script_checks_its_ttl_before_it_writes_anything[single-9007199254740992]",
        ),
    ),
    # -- the many-key calls ------------------------------------------------------------------------
    Mutant(
        id="many-local-hit-skipped",
        promise="S: get_many(keys)",
        removes="get_many answering the keys held locally without I/O",
        file=_MANY,
        before="            entry = fresh(key)\n",
        after="            entry = None\n",
        tests=_t(_T_MANY, "test_local_hits_send_nothing_to_redis[single]"),
    ),
    Mutant(
        id="many-one-round-trip-per-key",
        promise="S: get_many(keys)",
        removes="the one round trip of a single node: a script call per key instead",
        file=_MANY,
        before="            return [keys]\n",
        after="            return [[key] for key in keys]\n",
        tests=_t(_T_MANY, "test_one_round_trip_per_slot_group[single]"),
    ),
    Mutant(
        id="many-calls-keep-the-lock",
        promise="S: set_many(mapping, ttl=), delete_many(keys)",
        removes="set_many and delete_many revoking each key's lock",
        file=_MANY_WRITES,
        before="names += (self._keys.value(key), self._keys.lock(key))",
        after='names += (self._keys.value(key), self._keys.value(key) + ":not-the-lock")',
        tests=_t(
            _T_MANY,
            "test_a_fetch_that_started_before_a_many_key_change_never_stores_its_result"
            "[single-set_many]",
            "test_a_fetch_that_started_before_a_many_key_change_never_stores_its_result"
            "[single-delete_many]",
        ),
    ),
    Mutant(
        id="set-many-not-kept-locally",
        promise="S: set_many(mapping, ttl=), delete_many(keys)",
        removes="the caller's local layer holding what set_many wrote",
        file=_MANY_WRITES,
        before="            self._remember(\n"
        "                key, loads(payload), guard, int(version), len(payload), expires_at, "
        "tags=tags\n"
        "            )\n",
        after="            pass\n",
        tests=_t(_T_MANY, "test_set_many_writes_what_set_writes_and_keeps_it_locally[single]"),
    ),
    Mutant(
        id="delete-many-keeps-the-local-copy",
        promise="S: set_many(mapping, ttl=), delete_many(keys)",
        removes="delete_many dropping the caller's local copies at once",
        file=_MANY_WRITES,
        before="            self._local.discard(key)\n            self._wrote(",
        after="            self._wrote(",
        tests=_t(
            _T_MANY,
            "test_a_many_key_change_in_the_same_process_is_not_undone_by_its_running_load"
            "[single-delete_many]",
        ),
    ),
    Mutant(
        id="delete-many-joins-older-loads",
        promise="S: set_many(mapping, ttl=), delete_many(keys)",
        removes="delete_many detaching the loads in flight of its keys in this process",
        file=_MANY_WRITES,
        before="            self._wrote(key, int(version))\n            self._stats.deletes",
        after="            self._stats.deletes",
        tests=_t(
            _T_MANY,
            "test_a_many_key_change_in_the_same_process_is_not_undone_by_its_running_load"
            "[single-delete_many]",
        ),
    ),
    Mutant(
        id="many-key-change-cancelled-keeps-old-copies",
        promise="S: set_many(mapping, ttl=), delete_many(keys)",
        removes="set_many and delete_many treating a change cancelled with its reply on the "
        "wire as maybe done",
        file=_MANY_WRITES,
        before="            for key in keys:\n                self._write_unknown(key)",
        after="            pass",
        tests=_t(
            _T_MANY,
            "test_a_many_key_call_cancelled_with_its_reply_on_the_wire_keeps_no_old_copy"
            "[single-set_many]",
            "test_a_many_key_call_cancelled_with_its_reply_on_the_wire_keeps_no_old_copy"
            "[single-delete_many]",
        ),
    ),
    Mutant(
        id="many-keys-str-iterated",
        promise="S: set_many(mapping, ttl=), delete_many(keys)",
        removes="refusing a str as keys (it was read as its characters)",
        file=_MANY,
        before="if isinstance(keys, str | bytes | bytearray | memoryview) or not isinstance(",
        after="if not isinstance(",
        tests=_t(
            _T_MANY,
            "test_bad_input_is_refused_before_any_io[single-get_many str]",
            "test_bad_input_is_refused_before_any_io[single-delete_many str]",
        ),
    ),
    Mutant(
        id="set-many-none-stored",
        promise="S: set_many(mapping, ttl=), delete_many(keys)",
        removes="set_many refusing a None value before anything is sent",
        file="redicache_async/entry.py",
        before='    if value is None:\n        raise InvalidArgumentError(f"{what} must not',
        after='    if False:\n        raise InvalidArgumentError(f"{what} must not',
        tests=_t(_T_MANY, "test_bad_input_is_refused_before_any_io[single-set_many None value]"),
    ),
    # -- the rows of bad input --------------------------------------------------------------------
    Mutant(
        id="local-hit-skips-argument-checks",
        promise="S: bad arguments",
        removes="get_or_init checking its arguments before the local layer answers",
        file=_CLIENT,
        before=(
            '            validate_key(key)\n            check_callable("fetch", fetch)\n'
            "            ttl_to_ms(ttl)\n            check_soft_timeout("
        ),
        after="            check_soft_timeout(",
        tests=_t("tests/test_bad_input.py", "test_a_call_fails_alike_whether_or_not_it_would_hit"),
    ),
    Mutant(
        id="keys-without-utf8-accepted",
        promise="S: keys",
        removes="refusing a key that has no UTF-8 form (a lone surrogate)",
        file="redicache_async/keys.py",
        before='    if (len(key) if key.isascii() else len(encoded(key, "key"))) > MAX_KEY_BYTES:',
        after=(
            "    if (len(key) if key.isascii() else "
            'len(key.encode("utf-8", "replace"))) > MAX_KEY_BYTES:'
        ),
        tests=_t(
            "tests/test_bad_input.py",
            "test_a_bad_key_never_fails_the_other_callers_of_its_batch",
        ),
    ),
    Mutant(
        id="deep-value-raises-recursion-error",
        promise="S: values",
        removes="a value nested too deeply raising SerializationError",
        file="redicache_async/serializers.py",
        before=(
            "        except RecursionError as exc:\n            raise SerializationError("
            '"value is nested too deeply to be stored as JSON") from exc'
        ),
        after="        except RecursionError:\n            raise",
        tests=_t("tests/test_bad_input.py", "test_every_encoding_failure_is_a_serialization_error"),
    ),
    Mutant(
        id="orjson-output-unchecked",
        promise="S: values",
        removes="JSON encoded by orjson only when it reads back equal to the value",
        file="redicache_async/serializers.py",
        before="                if _orjson_loads(data) == value:  # type: ignore[misc]\n",
        after="                if True:\n",
        tests=_t(
            "tests/test_serializers.py",
            "test_json_encodes_as_the_standard_library_where_orjson_would_differ",
        ),
    ),
    Mutant(
        id="orjson-reads-dict-subclass-storage",
        promise="S: values",
        removes="subclasses of the built-ins encoded by the standard library, not orjson",
        file="redicache_async/serializers.py",
        before="                data = fast(value, _refuse, OPT_PASSTHROUGH_SUBCLASS)",
        after="                data = fast(value, _refuse)",
        tests=_t(
            "tests/test_serializers.py",
            "test_json_encodes_as_the_standard_library_where_orjson_would_differ",
        ),
    ),
    # -- configuration errors are not outages -----------------------------------------------------
    Mutant(
        id="tls-mistake-taken-for-outage",
        promise="S: a TLS mistake",
        removes="a failed TLS handshake read as a configuration error",
        file="redicache_async/tls.py",
        before="        if isinstance(cause, ssl.SSLError) and not isinstance(cause, _TRANSIENT):",
        after="        if False:",
        tests=_t(_T_SECURITY, "test_tls_mistakes_are_configuration_errors_at_start"),
    ),
    Mutant(
        id="plain-to-tls-port-taken-for-outage",
        promise="S: a TLS mistake",
        removes="the TLS handshake that recognises a plain client at a TLS port",
        file="redicache_async/tls.py",
        before="        or not await speaks_tls(host, port, timeout)",
        after="        or True",
        tests=_t(_T_SECURITY, "test_tls_mistakes_are_configuration_errors_at_start"),
    ),
    Mutant(
        id="listener-probes-every-reset",
        promise="S: a TLS mistake",
        removes="reconnections of a listener that had subscribed going without a TLS probe",
        file=_LISTENER,
        before="        if self._subscribed.is_set():\n            return tls_error(exc)",
        after="        if False:\n            return tls_error(exc)",
        tests=_t(_T_CLIENT, "test_a_listener_that_was_subscribed_reconnects_without_a_tls_probe"),
    ),
    # -- a handle answers only while its app runs ------------------------------------------------
    Mutant(
        id="lifespan-leaves-handle-unbound",
        promise="S: a function decorated through a CacheHandle",
        removes="the lifespan binding the handle to the client it opened",
        file="redicache_async/integrations/_resources.py",
        before="            bind.bind(cache)\n",
        after="            pass\n",
        tests=_t(
            _T_HANDLE,
            "test_fastapi_lifespan_binds_the_handle_while_the_app_runs",
            "test_aiohttp_cleanup_context_binds_the_handle_while_the_app_runs[single]",
        ),
    ),
    Mutant(
        id="handle-outlives-its-client",
        promise="S: a function decorated through a CacheHandle",
        removes="the unbinding of a handle before its client closes",
        file="redicache_async/integrations/_resources.py",
        before="            stack.callback(bind.unbind)",
        after="            pass",
        tests=_t(
            _T_HANDLE,
            "test_fastapi_lifespan_binds_the_handle_while_the_app_runs",
            "test_aiohttp_cleanup_context_binds_the_handle_while_the_app_runs[single]",
        ),
    ),
    # -- plain fetches run in threads of the library's own ----------------------------------------
    Mutant(
        id="fetch-threads-unbounded",
        promise="S: fetch is a plain function",
        removes="the bound of fetch_threads on plain fetches running at once",
        file="redicache_async/fetching.py",
        before="        async with self._slots:\n",
        after="        async with contextlib.nullcontext():\n",
        tests=_t(_T_FETCH_THREADS, "test_fetch_threads_bounds_the_plain_fetches_that_run_at_once"),
    ),
    Mutant(
        id="plain-fetch-in-default-executor",
        promise="S: a plain fetch hangs",
        removes="the library's own threads (the loop's default executor, joined at exit)",
        file="redicache_async/fetching.py",
        before='            result = await _in_thread(f"{THREAD_NAME}:{name}", call)',
        after="            result = await asyncio.to_thread(call)",
        tests=_t(
            _T_FETCH_THREADS, "test_a_hung_plain_fetch_does_not_keep_the_process_from_exiting"
        ),
    ),
    Mutant(
        id="fetch-thread-joined-at-exit",
        promise="S: a plain fetch hangs",
        removes="the daemon flag of a fetch's thread (the interpreter joins it at exit)",
        file="redicache_async/fetching.py",
        before="name=name, daemon=True)",
        after="name=name, daemon=False)",
        tests=_t(
            _T_FETCH_THREADS, "test_a_hung_plain_fetch_does_not_keep_the_process_from_exiting"
        ),
    ),
    # -- the decorator's default key ---------------------------------------------------------------
    Mutant(
        id="key-memo-confuses-equal-values",
        promise="S: a @cache.cached() function without key=",
        removes="the type check that keeps 1, True and 1.0 apart in the remembered keys",
        file="redicache_async/call_keys.py",
        before="if kind is not str and kind is not int:",
        after="if kind not in _SCALARS:",
        tests=("tests/test_decorator.py::test_default_keys_tell_arguments_apart",),
    ),
    Mutant(
        id="breaker-counts-calls-older-than-its-close",
        promise="S: Redis unreachable",
        removes="the epoch check that keeps a failure from before the last close uncounted",
        file="redicache_async/breaker.py",
        before="        if epoch is not None and epoch != self.epoch:",
        after="        if False:",
        tests=(
            "tests/test_breaker.py::test_a_failure_of_a_call_older_than_the_last_close_is_not_counted",
        ),
    ),
    # -- a fetch's Entry (adaptive caching) ------------------------------------------------------
    Mutant(
        id="entry-not-unwrapped",
        promise="S: fetch returns an Entry",
        removes="opening the Entry a fetch returned (it would be stored, and fail to serialize)",
        file=_ENTRY,
        before="    if not isinstance(result, Entry):\n        return result, ttl_ms, tags",
        after="    if True:\n        return result, ttl_ms, tags",
        tests=_t(_T_ENTRY, "test_an_entrys_ttl_is_what_redis_holds_and_the_local_copy_follows"),
    ),
    Mutant(
        id="entry-ttl-ignored",
        promise="S: fetch returns an Entry",
        removes="the Entry's ttl (the call's is used)",
        file=_ENTRY,
        before="        ttl_ms if entry_ttl is None else entry_ttl,",
        after="        ttl_ms,",
        tests=_t(_T_ENTRY, "test_an_entrys_ttl_is_what_redis_holds_and_the_local_copy_follows"),
    ),
    Mutant(
        id="entry-ttl-unchecked",
        promise="S: fetch returns an Entry",
        removes="the check of an Entry's ttl (0 would store the value without expiry)",
        file=_ENTRY,
        before="self._ttl_ms = None if ttl is UNSET else ttl_to_ms(ttl)",
        after="self._ttl_ms = None if ttl is UNSET else round(ttl * 1000)  # type: ignore",
        tests=_t(_T_ENTRY, "test_a_bad_entry_fails_the_call_and_caches_nothing"),
    ),
    Mutant(
        id="entry-of-none-accepted",
        promise="S: fetch returns an Entry",
        removes="refusing Entry(None)",
        file=_ENTRY,
        before="        if value is None:\n            raise InvalidArgumentError(",
        after="        if False:\n            raise InvalidArgumentError(",
        tests=_t(_T_ENTRY, "test_a_bad_entry_fails_the_call_and_caches_nothing"),
    ),
    # -- eager refresh ---------------------------------------------------------------------------
    Mutant(
        id="eager-local-hit-not-refreshed",
        promise="S: get_or_init(..., eager_refresh=f)",
        removes="the age check of a local hit",
        file=_EAGER,
        before="self._refresh_if_due(key, fetch, ttl, eager_refresh, entry.version, float(entry))",
        after="pass",
        tests=_t(
            _T_EAGER,
            "test_a_local_hit_past_the_fraction_answers_at_once_then_the_value_is_refreshed",
        ),
    ),
    Mutant(
        id="eager-redis-hit-not-refreshed",
        promise="S: get_or_init(..., eager_refresh=f)",
        removes="the age check of a Redis hit",
        file=_EAGER,
        before="self._refresh_if_due(key, fetch, ttl, fraction, read.version, expires_at)",
        after="pass",
        tests=_t(
            _T_EAGER, "test_a_redis_hit_past_the_fraction_refreshes_too_without_a_local_layer"
        ),
    ),
    Mutant(
        id="eager-refresh-regardless-of-age",
        promise="S: get_or_init(..., eager_refresh=f)",
        removes="waiting for f of the TTL: every hit refreshes",
        file=_EAGER,
        before="if written is None or monotonic() < written + fraction * (expires_at - written):",
        after="if written is None:",
        tests=_t(_T_EAGER, "test_no_refresh_before_the_fraction_nor_for_a_value_without_ttl"),
    ),
    Mutant(
        id="eager-refreshes-not-one-per-key",
        promise="S: get_or_init(..., eager_refresh=f)",
        removes="one refresh per key per process at a time",
        file=_EAGER,
        before="        if not version or expires_at is None or key in self._refreshes:",
        after="        if not version or expires_at is None:",
        tests=_t(_T_EAGER, "test_two_processes_past_the_fraction_run_one_fetch"),
    ),
    Mutant(
        id="eager-refresh-ignores-the-lock",
        promise="S: get_or_init(..., eager_refresh=f)",
        removes="the lock deciding which process refreshes",
        file=_EAGER,
        before="if claimed is None:\n                await wait_event(wake, self._lock_ttl)",
        after="if False:\n                await wait_event(wake, self._lock_ttl)",
        tests=_t(_T_EAGER, "test_two_processes_past_the_fraction_run_one_fetch"),
    ),
    Mutant(
        id="eager-refresh-does-not-stand-down",
        promise="S: get_or_init(..., eager_refresh=f)",
        removes="standing down when a newer value was written before the lock was taken",
        file=_EAGER,
        before="            elif guard.void or guard.min_version > version:",
        after="            elif False:",
        tests=_t(
            _T_EAGER, "test_a_refresh_that_takes_the_lock_after_another_refreshed_stands_down"
        ),
    ),
    Mutant(
        id="eager-refresh-failure-retried-at-once",
        promise="S: get_or_init(..., eager_refresh=f)",
        removes="the pause after a failed refresh (every hit would run the failing fetch)",
        file=_EAGER,
        before="exc_info=True\n            )\n            await asyncio.sleep(RETRY_PAUSE)",
        after="exc_info=True\n            )",
        tests=_t(_T_EAGER, "test_a_failing_refresh_keeps_the_old_value_and_reaches_no_caller"),
    ),
    Mutant(
        id="eager-refresh-of-none-retried-at-once",
        promise="S: get_or_init(..., eager_refresh=f)",
        removes="the pause after a refresh whose fetch returned None",
        file=_EAGER,
        before="                if value is None:  # nothing to store",
        after="                if False:  # nothing to store",
        tests=_t(
            _T_EAGER, "test_a_refresh_whose_fetch_returns_none_keeps_the_old_value_and_pauses"
        ),
    ),
    Mutant(
        id="eager-refresh-not-owned",
        promise="S: get_or_init(..., eager_refresh=f)",
        removes="the refresh being a task of the client's (aclose() would not end it)",
        file=_EAGER,
        before="        task = self._tasks.spawn(",
        after="        task = asyncio.create_task(",
        tests=_t(_T_EAGER, "test_aclose_cancels_a_refresh_in_flight_and_one_waiting_for_the_lock"),
    ),
    Mutant(
        id="eager-decorator-hit-not-refreshed",
        promise="S: get_or_init(..., eager_refresh=f)",
        removes="a decorated function's hits going through get_or_init's age check",
        file="redicache_async/decorator.py",
        before="            self._local_value = _no_local_answer",
        after="            pass",
        tests=_t(_T_EAGER, "test_a_decorated_function_refreshes_eagerly"),
    ),
    Mutant(
        id="eager-read-survives-an-event",
        promise="D3",
        removes="a write's event forgetting the eager callers' reads in flight",
        file=_COHERENCE,
        before=(
            "            self._values.forget(event.key)\n"
            "            self._headed_values.forget(event.key)"
        ),
        after="            self._values.forget(event.key)",
        tests=_t(
            _T_EAGER,
            "test_a_write_heard_of_is_seen_by_the_next_eager_call_while_an_older_read_is_in_flight",
        ),
    ),
    Mutant(
        id="eager-miss-without-soft-timeout",
        promise="S: get_or_init(..., soft_timeout=s)",
        removes="an eager call's miss waiting its soft_timeout at most",
        file=_EAGER,
        before="            return await self._load(key, fetch, ttl_ms, read, soft_timeout)",
        after="            return await self._load(key, fetch, ttl_ms, read, None)",
        tests=_t(_T_EAGER, "test_an_eager_call_that_misses_honours_its_soft_timeout"),
    ),
    Mutant(
        id="eager-refresh-fraction-bounds",
        promise="S: get_or_init(..., eager_refresh=f)",
        removes="refusing 0 and 1 as eager_refresh",
        file="redicache_async/validation.py",
        before="    if not 0 < value < 1:  # NaN fails it too",
        after="    if not 0 <= value <= 1:  # NaN fails it too",
        tests=_t(_T_EAGER, "test_eager_refresh_outside_zero_one_is_refused_before_any_io"),
    ),
    # -- soft timeouts (issue 17) ------------------------------------------------------------------
    Mutant(
        id="soft-timeout-ignored",
        promise=_SOFT_ROW,
        removes="answering a caller past its soft timeout with the stale copy",
        file=_LOADS,
        before="            if soft_timeout is None:\n                return await joined",
        after="            if True:\n                return await joined",
        tests=_t(
            _T_SOFT,
            "test_callers_get_the_stale_copy_while_the_fetch_goes_on_and_stores_its_result[single]",
        ),
    ),
    Mutant(
        id="soft-timeout-answers-without-a-copy",
        promise=_SOFT_ROW,
        removes="waiting for the fetch when no stale copy is at hand",
        file=_SOFT,
        before="            if answer is not None:\n",
        after="            if True:\n",
        tests=_t(_T_SOFT, "test_without_a_stale_copy_callers_wait_for_the_fetch[single]"),
    ),
    Mutant(
        id="soft-timeout-stale-not-counted",
        promise=_SOFT_ROW,
        removes="counting a soft timeout's stale answer in stats().stale_served",
        file=_LOADS,
        before="lambda: self._stale_or(key, None))",
        after='lambda: getattr(self._local.stale(key), "value", None))',
        tests=_t(
            _T_SOFT,
            "test_callers_get_the_stale_copy_while_the_fetch_goes_on_and_stores_its_result[single]",
        ),
    ),
    Mutant(
        id="soft-timeout-abandons-the-fetch",
        promise=_SOFT_ROW,
        removes="the shield that keeps the fetch going once its callers stopped waiting",
        file=_LOCKS,
        before="        return flight.join()",
        after="        return flight.task",
        tests=_t(_T_SOFT, "test_the_fetch_stores_its_result_after_every_caller_has_gone[single]"),
    ),
    Mutant(
        id="soft-timeout-fetch-unowned",
        promise=_SOFT_ROW,
        removes="the continuing fetch being a task of the client's, which aclose() ends",
        file=_LOCKS,
        before='_Flight(self._owner.spawn(factory(), name=f"redicache-load:{key}"))',
        after='_Flight(asyncio.create_task(factory(), name=f"redicache-load:{key}"))',
        tests=_t(
            _T_SOFT,
            "test_aclose_ends_the_continuing_fetch_without_a_write_and_releases_its_lock[single]",
        ),
    ),
    Mutant(
        id="soft-timeout-late-write-not-fenced",
        promise=_SOFT_ROW,
        removes="a set revoking the lock of the fetch that goes on past its callers",
        file=_VALUE_SCRIPTS,
        before="  redis.call('DEL', lock)\n  announce",
        after="  if token ~= '' then redis.call('DEL', lock) end\n  announce",
        tests=_t(_T_SOFT, "test_a_set_during_the_continuing_fetch_wins[single]"),
    ),
    Mutant(
        id="soft-timeout-dropped-by-the-decorator",
        promise=_SOFT_ROW,
        removes="a cached function passing its soft_timeout to get_or_init",
        file="redicache_async/decorator.py",
        before="            else functools.partial(client.get_or_init, soft_timeout=soft_timeout)",
        after="            else client.get_or_init",
        tests=_t(
            _T_SOFT,
            "test_a_cached_function_with_a_soft_timeout_answers_stale_while_it_runs[single-client]",
        ),
    ),
    Mutant(
        id="soft-timeout-dropped-by-the-handle",
        promise=_SOFT_ROW,
        removes="a CacheHandle passing soft_timeout on to its client",
        file="redicache_async/handle.py",
        before="        return self.client.get_or_init(*args, **kwargs)",
        after=(
            '        kwargs.pop("soft_timeout", None)\n'
            "        return self.client.get_or_init(*args, **kwargs)"
        ),
        tests=_t(
            _T_SOFT,
            "test_a_cached_function_with_a_soft_timeout_answers_stale_while_it_runs[single-handle]",
        ),
    ),
    Mutant(
        id="soft-timeout-equal-to-fetch-timeout",
        promise="S: soft_timeout",
        removes="refusing a soft_timeout equal to fetch_timeout",
        file=_SOFT,
        before="seconds >= fetch_timeout",
        after="seconds > fetch_timeout",
        tests=_t(
            _T_SOFT,
            "test_a_bad_soft_timeout_is_refused_before_any_io_hit_or_miss[single-equal-to-fetch-timeout]",
        ),
    ),
    Mutant(
        id="soft-timeout-unchecked-on-a-hit",
        promise="S: soft_timeout",
        removes="checking soft_timeout on a local hit",
        file=_CLIENT,
        before="check_soft_timeout(soft_timeout, self._fetcher.timeout)\n        # LocalLayer",
        after="pass\n        # LocalLayer",
        tests=_t(
            _T_SOFT, "test_a_bad_soft_timeout_is_refused_before_any_io_hit_or_miss[single-zero]"
        ),
    ),
    Mutant(
        id="soft-timeout-unchecked-when-decorating",
        promise="S: soft_timeout",
        removes="cache.cached() checking soft_timeout against fetch_timeout",
        file="redicache_async/client/decorating.py",
        before="        return self._fetcher.timeout\n",
        after="        return None\n",
        tests=_t(
            _T_SOFT,
            "test_a_bad_soft_timeout_is_refused_before_any_io_hit_or_miss[single-equal-to-fetch-timeout]",
        ),
    ),
    # -- hot commands on a pooled connection (direct.py) ----------------------------------------
    Mutant(
        id="direct-commands-skip-overrides",
        promise=_DIRECT_ROW,
        removes="sending hot commands through a subclass's own execute_command",
        file=_DIRECT,
        before='    if method.__qualname__ != "Redis.execute_command" or hasattr(',
        after="    if hasattr(",
        tests=_t(_T_DIRECT, "test_an_override_of_execute_command_sees_every_command"),
    ),
    Mutant(
        id="direct-commands-skip-wrappers",
        promise=_DIRECT_ROW,
        removes="sending hot commands through an execute_command wrapped in place (tracing)",
        file=_DIRECT,
        before=' or hasattr(method, "__wrapped__"):',
        after=":",
        tests=_t(_T_DIRECT, "test_an_execute_command_wrapped_in_place_sees_every_command"),
    ),
    Mutant(
        id="direct-send-skips-health-checks",
        promise=_DIRECT_ROW,
        removes="a direct command's connection health-checked as the pool's own commands are",
        file=_DIRECT,
        before="        if writer is None or connection.health_check_interval:",
        after="        if writer is None:",
        tests=_t(_T_DIRECT, "test_the_pools_health_checks_still_apply_to_direct_commands"),
    ),
    Mutant(
        id="direct-command-cut-is-an-outage",
        promise=_DIRECT_ROW,
        removes="sending a command again through redis-py when its connection was cut",
        file="redicache_async/scripts.py",
        before="                pass  # redis-py's retry policy decides, as for any command\n",
        after="                raise\n",
        tests=_t(
            _T_DIRECT, "test_a_connection_cut_under_a_read_is_retried_as_redis_py_retries[single]"
        ),
    ),
    # -- clear() --------------------------------------------------------------------------------
    Mutant(
        id="cleared-value-read-as-a-value",
        promise="S: clear()",
        removes="readers skipping a value not newer than the namespace's clear time",
        file=_LOADS,
        before="        if version <= self._cleared or (tags and "
        "self._tag_invalidated(version, tags)):",
        after="        if tags and self._tag_invalidated(version, tags):",
        tests=_t(_T_CLEAR, "test_clear_removes_every_value_for_every_client[single]"),
    ),
    Mutant(
        id="cleared-value-taken-by-the-lock-path",
        promise="S: clear()",
        removes="get_or_init's lock path skipping a value that a clear heard meanwhile removed",
        file=_LOADS,
        before="                        if self._cleared_value(version):  # a clear heard "
        "meanwhile",
        after="                        if False:  # a clear heard meanwhile",
        tests=_t(
            _T_CLEAR,
            "test_a_value_the_lock_script_found_before_a_clear_it_has_heard_of_is_not_taken",
        ),
    ),
    Mutant(
        id="clear-keeps-local-copies",
        promise="S: clear()",
        removes="every process dropping its local copies on a clear",
        file=_COHERENCE,
        before="        self._cleared = cleared\n        self._stats.invalidations_received += 1\n"
        "        self._local.clear()\n",
        after="        self._cleared = cleared\n        self._stats.invalidations_received += 1\n",
        tests=_t(_T_CLEAR, "test_clear_removes_every_value_for_every_client[single]"),
    ),
    Mutant(
        id="fenced-write-versioned-at-write-time",
        promise="S: clear()",
        removes="a fenced write's version being its lock's claim time (a fetch older than a "
        "clear would then store a value newer than it)",
        file=_VALUE_SCRIPTS,
        before="  if token ~= '' and claimed then",
        after="  if false then",
        tests=(
            *_t(_T_CLEAR, "test_a_clear_during_a_cluster_write_is_found_after_it[cluster]"),
            *_t(
                _T_TAGS,
                "test_an_invalidation_during_a_cluster_write_is_found_after_it[cluster]",
            ),
        ),
    ),
    Mutant(
        id="cleared-value-kept-locally",
        promise="S: clear()",
        removes="a process keeping locally a value older than a clear it heard of meanwhile",
        file=_COHERENCE,
        before="        if 0 < version <= self._cleared and key.__class__ is str:",
        after="        if False:",
        tests=_t(
            _T_CLEAR,
            "test_a_set_that_a_clear_overtook_on_its_way_back_is_not_kept_locally",
        ),
    ),
    Mutant(
        id="clear-time-not-read-on-subscribing",
        promise="S: clear()",
        removes="a listener reading the clear time when it subscribes",
        file=_COHERENCE,
        before="(await self._gateway.bounded(self._read_clear_time()))",
        after="(None)",
        tests=_t(
            _T_CLEAR,
            "test_a_client_started_after_a_clear_does_not_read_the_cleared_values[single]",
        ),
    ),
    Mutant(
        id="clear-overtaken-write-not-refused",
        promise="S: clear()",
        removes="the write script refusing a fenced write whose fetch a clear overtook",
        file=_VALUE_SCRIPTS,
        before="    if (tonumber(redis.call('GET', cleared)) or 0) >= since then return 0 end",
        after="    if false then return 0 end",
        tests=_t(
            _T_CLEAR, "test_a_fetch_that_started_before_clear_stores_nothing_anyone_takes[single]"
        ),
    ),
    Mutant(
        id="clear-overtaken-write-kept-on-a-cluster",
        promise="S: clear()",
        removes="a cluster writer taking back a value whose fetch a clear overtook",
        file=_FENCED_WRITES,
        before="        return self._cleared_value(version) or "
        "self._tag_invalidated(version, tags)",
        after="        return self._tag_invalidated(version, tags)",
        tests=_t(
            _T_CLEAR, "test_a_fetch_that_started_before_clear_stores_nothing_anyone_takes[cluster]"
        ),
    ),
    # -- invalidate_tags() --------------------------------------------------------------------
    Mutant(
        id="tags-event-ignored",
        promise="S: invalidate_tags(*tags)",
        removes="every process dropping its copies of the tagged values on a tags event",
        file=_COHERENCE,
        before="            self._on_tags_invalidated(event_tags(event), event.version)\n",
        after="            pass\n",
        tests=_t(
            _T_TAGS, "test_invalidate_tags_removes_the_tagged_values_for_every_client[single]"
        ),
    ),
    Mutant(
        id="tagged-copies-not-indexed",
        promise="S: invalidate_tags(*tags)",
        removes="the local index of tagged copies (a tags event would find none to drop)",
        file=_COHERENCE,
        before="            self._index_tags(key, tags)\n",
        after="            pass\n",
        tests=_t(
            _T_TAGS, "test_invalidate_tags_removes_the_tagged_values_for_every_client[single]"
        ),
    ),
    Mutant(
        id="late-tags-event-unindexes-newer-copies",
        promise="S: invalidate_tags(*tags)",
        removes="keeping indexed the copies newer than an invalidation whose event came late "
        "(the next invalidation of the tag would not find them)",
        file=_COHERENCE,
        before="        kept = {key for key in kept if local.holds(key)}\n",
        after="        kept = set()\n",
        tests=_t(
            _T_TAGS,
            "test_an_invalidation_heard_after_a_newer_write_leaves_it_to_the_next_one[single]",
        ),
    ),
    Mutant(
        id="write-version-floor-ignored",
        promise="S: invalidate_tags(*tags)",
        removes="a write's version passing the latest clear or invalidation its writer knows "
        "of (a value node's clock behind the namespace node's would make it read as older)",
        file=_VALUE_SCRIPTS,
        before="    version = bump(math.max(stored_version(value) or 0, "
        "tonumber(claimed) or 0), t)",
        after="    version = bump(stored_version(value), t)",
        tests=_t(
            _T_TAGS,
            "test_a_write_after_an_invalidation_is_newer_than_it_whatever_the_clocks[single]",
        ),
    ),
    Mutant(
        id="tag-times-ignored-by-reads",
        promise="S: invalidate_tags(*tags)",
        removes="readers skipping a value not newer than one of its tags' times",
        file=_COHERENCE,
        before="        return bool(tags) and version <= self._tag_times.latest(tags)\n",
        after="        return False\n",
        tests=_t(
            _T_TAGS,
            "test_a_client_started_after_an_invalidation_does_not_read_the_values[single]",
        ),
    ),
    Mutant(
        id="tag-times-never-read",
        promise="S: invalidate_tags(*tags)",
        removes="a client reading the times of the tags it meets (it would know only those it "
        "heard of)",
        file=_COHERENCE,
        before="        return list(tags)\n",
        after="        return []\n",
        tests=_t(
            _T_TAGS,
            "test_a_client_started_after_an_invalidation_does_not_read_the_values[single]",
        ),
    ),
    Mutant(
        id="tag-invalidated-value-taken-by-get-or-init",
        promise="S: invalidate_tags(*tags)",
        removes="get_or_init's read-or-lock skipping a value whose tag was invalidated (it "
        "would answer the value instead of fetching)",
        file=_LOADS,
        before="                            if self._tag_invalidated(version, tags):",
        after="                            if False:",
        tests=_t(
            _T_TAGS,
            "test_a_client_started_after_an_invalidation_does_not_read_the_values[single]",
        ),
    ),
    Mutant(
        id="tag-overtaken-write-not-refused",
        promise="S: invalidate_tags(*tags)",
        removes="the write script refusing a fenced write whose fetch an invalidation of one of "
        "its tags overtook",
        file=_VALUE_SCRIPTS,
        before="        if (tonumber(at) or 0) >= since then return 0 end",
        after="        if false then return 0 end",
        tests=_t(
            _T_TAGS,
            "test_a_fetch_that_started_before_invalidate_tags_stores_nothing_anyone_takes[single]",
        ),
    ),
    Mutant(
        id="tag-overtaken-write-kept-on-a-cluster",
        promise="S: invalidate_tags(*tags)",
        removes="a cluster writer taking back a value whose fetch an invalidation of its tags "
        "overtook",
        file=_FENCED_WRITES,
        before="            if not await self._overtaken(int(version), tags):\n"
        "                return True\n",
        after="            return True\n",
        tests=_t(_T_TAGS, "test_an_invalidation_during_a_cluster_write_is_found_after_it[cluster]"),
    ),
    Mutant(
        id="cluster-write-unchecked-before",
        promise="S: invalidate_tags(*tags)",
        removes="a cluster writer checking the clear and tag times before it writes (a value "
        "an invalidation overtook would be written, seen, then taken back)",
        file=_FENCED_WRITES,
        before="            else await self._overtaken(int(claimed), tags)\n",
        after="            else False\n",
        tests=_t(
            _T_TAGS,
            "test_a_writer_that_has_not_heard_of_the_invalidation_stores_nothing_anyone_takes"
            "[cluster]",
        ),
    ),
    Mutant(
        id="batch-writes-unchecked-before",
        promise="S: invalidate_tags(*tags)",
        removes="a cluster batch reading the clear and tag times before its writes (values an "
        "invalidation overtook would be written, seen, then taken back)",
        file="redicache_async/client/batch_loader.py",
        before="        if self._cluster:\n"
        "            # The check before writing (see ``_write_fetched``), once for the whole "
        "batch.\n",
        after="        if False:\n",
        tests=_t(
            _T_TAGS,
            "test_a_batch_that_has_not_heard_of_the_invalidation_writes_none_of_its_values"
            "[cluster]",
        ),
    ),
    Mutant(
        id="refused-writer-keeps-its-old-copy",
        promise="S: invalidate_tags(*tags)",
        removes="a writer whose write an invalidation refused learning the tag's time (it "
        "would serve its older copy until the event came)",
        file=_FENCED_WRITES,
        before="            if int(version) == 0:\n"
        "                await self._overtaken(0, tags)\n",
        after="",
        tests=_t(
            _T_TAGS,
            "test_a_writer_that_has_not_heard_of_the_invalidation_stores_nothing_anyone_takes"
            "[single]",
        ),
    ),
    Mutant(
        id="call-tags-dropped",
        promise="S: invalidate_tags(*tags)",
        removes="get_or_init's and attempt_regeneration's tags= reaching the stored value",
        file=_ENTRY,
        before="        if not isinstance(result, Entry):\n"
        "            return Entry(result, tags=tags)",
        after="        if not isinstance(result, Entry):\n            return result",
        tests=_t(
            _T_TAGS,
            "test_a_fetch_that_started_before_invalidate_tags_stores_nothing_anyone_takes[single]",
        ),
    ),
    Mutant(
        id="batch-call-tags-dropped",
        promise="S: invalidate_tags(*tags)",
        removes="get_or_init_many's tags= reaching the values its fetch_many returns",
        file=_ENTRY,
        before="        return result, ttl_ms, tags\n",
        after="        return result, ttl_ms, ()\n",
        tests=_t(
            "tests/test_batch_loader.py",
            "test_the_calls_tags_go_with_each_value_and_an_entrys_replace_them[single]",
        ),
    ),
    Mutant(
        id="entry-tags-dropped",
        promise="S: invalidate_tags(*tags)",
        removes="an Entry's tags reaching the stored value",
        file=_ENTRY,
        before="        tags if entry_tags is UNSET else entry_tags,",
        after="        tags,",
        tests=_t(
            _T_TAGS,
            "test_a_fetchs_entry_tags_its_value_and_a_regeneration_keeps_the_rule[single]",
        ),
    ),
    Mutant(
        id="decorator-tags-dropped",
        promise="S: invalidate_tags(*tags)",
        removes="the decorator's tags (computed from the arguments) reaching get_or_init",
        file="redicache_async/decorator.py",
        before="        if self._tags is not None:\n",
        after="        if False:\n",
        tests=_t(_T_TAGS, "test_the_decorator_computes_tags_from_the_arguments[single]"),
    ),
    Mutant(
        id="set-many-tags-dropped",
        promise="S: invalidate_tags(*tags)",
        removes="set_many's tags reaching the stored values",
        file=_MANY_WRITES,
        before="        checked_tags = check_tags(tags)\n        payloads",
        after="        checked_tags = ()\n        check_tags(tags)\n        payloads",
        tests=_t(
            _T_TAGS,
            "test_a_client_started_after_an_invalidation_does_not_read_the_values[single]",
        ),
    ),
    # -- the batch loader ------------------------------------------------------------------------
    Mutant(
        id="batch-fetches-locked-keys",
        promise=_BATCH_ROW,
        removes="a batch waiting for the keys whose locks another process holds (it fetches them)",
        file=_BATCH,
        before="            return await self._resolve(\n",
        after="            return await self._fetch_without_redis(key, fetch, ttl_ms, None)\n"
        "            await self._resolve(\n",
        tests=_t(
            _T_BATCH,
            "test_a_key_locked_elsewhere_is_waited_for_and_its_write_delivers_the_value[single]",
            "test_overlapping_batches_of_two_clients_fetch_each_key_once[single]",
            "test_overlapping_batches_of_processes_fetch_each_key_once[single]",
        ),
    ),
    Mutant(
        id="batch-tag-times-not-learnt",
        promise=_BATCH_ROW,
        removes="a batch learning the times of the tags of the values it read (a value whose "
        "tag was invalidated would be answered by a client that had not heard of it)",
        file=_BATCH,
        before="            if tags:  # their times known before the values are taken\n",
        after="            if False:\n",
        tests=_t(
            _T_BATCH, "test_tags_of_fetched_entries_are_kept_and_their_invalidation_wins[single]"
        ),
    ),
    Mutant(
        id="batch-claims-per-key",
        promise=_BATCH_ROW,
        removes="one read-or-claim per slot group: a script call per key instead",
        file=_BATCH,
        before="        groups = self._slot_groups(keys)\n",
        after="        groups = [[key] for key in keys]\n",
        tests=_t(_T_BATCH, "test_one_read_or_claim_per_slot_group[single]"),
    ),
    Mutant(
        id="batch-does-not-join-loads",
        promise=_BATCH_ROW,
        removes="a batch joining the loads of its keys running in this process (get_or_init's)",
        file=_BATCH,
        before="            key: self._loads.run(",
        after="            key: self._reads.run(",
        tests=_t(
            _T_BATCH, "test_batches_and_get_or_init_in_one_process_join_each_others_loads[single]"
        ),
    ),
    Mutant(
        id="batch-write-not-fenced",
        promise=_BATCH_ROW,
        removes="the batch's writes holding their locks' tokens (a set during its fetch is undone)",
        file=_BATCH,
        before="            lease, claimed = held.pop(key)\n",
        after='            lease, claimed = held.pop(key)\n            lease.token = ""\n',
        tests=_t(_T_BATCH, "test_a_write_or_delete_during_the_fetch_wins[single]"),
    ),
    Mutant(
        id="batch-omitted-key-keeps-its-lock",
        promise=_BATCH_LOCKS_ROW,
        removes="releasing the locks of the keys fetch_many did not return",
        file=_BATCH,
        before="                ends.append(self._locks.release(key, lease.key, lease.token))",
        after="                ends.append(asyncio.sleep(0))",
        tests=_t(
            _T_BATCH,
            "test_the_locks_of_keys_the_fetch_did_not_return_are_released_and_announced[single]",
        ),
    ),
    Mutant(
        id="batch-failure-keeps-the-locks",
        promise=_BATCH_LOCKS_ROW,
        removes="releasing the batch's locks when fetch_many raises or the client closes",
        file=_BATCH,
        before="                if held:  # not handed",
        after="                if False:  # not handed",
        tests=_t(
            _T_BATCH,
            "test_a_fetch_that_raises_fails_the_call_and_releases_every_lock[single]",
            "test_a_close_mid_fetch_fails_the_call_and_releases_every_lock[single]",
            "test_a_fetch_past_fetch_timeout_fails_the_call_and_releases_every_lock[single]",
        ),
    ),
    Mutant(
        id="batch-claims-on-the-wire-kept",
        promise=_BATCH_LOCKS_ROW,
        removes="releasing the batch's claims whose reply a close left on the wire",
        file=_BATCH,
        before="            for group in groups:  # the claims may have run\n",
        after="            for group in []:  # the claims may have run\n",
        tests=_t(
            _T_BATCH,
            "test_a_close_with_the_claims_reply_on_the_wire_releases_every_lock[single]",
        ),
    ),
    Mutant(
        id="batch-result-not-checked",
        promise=_BATCH_LOCKS_ROW,
        removes="refusing a fetch_many result with keys it was not asked for",
        file=_BATCH,
        before="    if extra:\n",
        after="    if False:\n",
        tests=_t(
            _T_BATCH,
            "test_a_fetch_returning_a_non_mapping_or_unasked_keys_is_refused"
            "[single-result1-not asked for.*stranger]",
        ),
    ),
)
