package dev.rtml.udfs;

import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * In-memory copies of the map-state entries of {@link SlidingWindowFeatures} for the partition keys
 * seen last, so that a key's next event reads its item counts, deque ends and recent log entries
 * from memory instead of from RocksDB (reads were three quarters of the operator's time).
 *
 * <p>It is a write-through cache of state that only this function instance writes: every change is
 * written to state in the same call ({@link StateBuffer#flush()}), a failure or a restore starts a
 * new instance with empty caches, and keys unused for {@link #MAX_IDLE_MS} are dropped long before
 * their state could expire by TTL. Memory is bounded: at most {@code maxEntries} entries in all
 * (a key counts as one entry; least recently used keys are dropped whole), per key the last
 * {@link #LOG_ENTRIES_PER_KEY} log entries and at most {@link #ENTRIES_PER_KEY} item counts and
 * deque slots each.
 */
final class KeyCache {

    /** Roughly 100 MB of heap: ~200 bytes an entry, hash map nodes included. */
    static final int DEFAULT_MAX_ENTRIES = 500_000;
    static final int LOG_ENTRIES_PER_KEY = 64;
    static final int ENTRIES_PER_KEY = 1_024;
    static final long MAX_IDLE_MS = 3_600_000L;

    final Map<Long, SlidingWindowFeatures.Entry> log = new HashMap<>();
    final Map<String, long[]> items = new HashMap<>();
    final Map<Long, SlidingWindowFeatures.Slot> deques = new HashMap<>();
    private long lastUsedMs;
    private int counted; // entries as last added to the total

    int size() {
        return log.size() + items.size() + deques.size();
    }

    /** The caches of the keys seen last, least recently used first. */
    static final class Keys {
        private final LinkedHashMap<Object, KeyCache> byKey =
                new LinkedHashMap<>(1024, 0.75f, true); // access order: least recent first
        private final long maxEntries;
        private long total;

        Keys(long maxEntries) {
            this.maxEntries = maxEntries;
        }

        /** At most this many entries of one kind for one key (0: no caching). */
        int limit(int perKey) {
            return (int) Math.min(perKey, maxEntries);
        }

        /** The key's cache, new if unknown or idle too long. */
        KeyCache of(Object key, long nowMs) {
            KeyCache cache = byKey.get(key);
            if (cache == null || nowMs - cache.lastUsedMs > MAX_IDLE_MS) {
                if (cache != null) {
                    total -= cache.counted;
                }
                cache = new KeyCache();
                cache.counted = 1; // the key itself
                total += 1;
                byKey.put(key, cache);
            }
            cache.lastUsedMs = nowMs;
            return cache;
        }

        /** Account for what a call added to or removed from a key's cache; drop the oldest keys. */
        void update(KeyCache cache) {
            int size = 1 + cache.size();
            total += size - cache.counted;
            cache.counted = size;
            Iterator<KeyCache> oldest = byKey.values().iterator();
            while (total > maxEntries && oldest.hasNext()) {
                KeyCache dropped = oldest.next();
                if (dropped == cache) {
                    break; // the key just used stays; it is the newest
                }
                total -= dropped.counted;
                oldest.remove();
            }
        }
    }
}
