package dev.rtml.udfs;

import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * In-memory copies of the map-state entries of {@link SlidingWindowFeatures} for the partition keys
 * seen last, so that a key's next event reads its meta value, item counts, deque ends and recent
 * log entries from memory instead of from RocksDB (reads were three quarters of the operator's
 * time).
 *
 * <p>It is a write-through cache of state that only this function instance writes: every change is
 * written to state in the same call ({@link StateBuffer#flush()}), a failure or a restore starts a
 * new instance with empty caches, and keys unused for {@link #MAX_IDLE_MS} are dropped long before
 * their state could expire by TTL.
 *
 * <p>Memory is bounded by an estimate of the heap the entries take, not by their number: item
 * values are the user's strings (an IP or a country code, but also a URL or a user agent), so an
 * entry may take 150 bytes or several kilobytes. The budget is given in entries of {@link
 * #ENTRY_BYTES} (what an entry of short items takes, hash map nodes included): {@code maxEntries}
 * of them in all, least recently used keys dropped whole. Per key at most the last {@link
 * #LOG_ENTRIES_PER_KEY} log entries and {@link #ENTRIES_PER_KEY} item counts and deque slots each
 * are kept.
 */
final class KeyCache {

    /** The default budget: 500,000 entries of {@link #ENTRY_BYTES}, about 100 MB of heap. */
    static final int DEFAULT_MAX_ENTRIES = 500_000;

    /** An entry of short items (an IP, a country code), with its hash map node and boxed key. */
    static final long ENTRY_BYTES = 200;

    static final int LOG_ENTRIES_PER_KEY = 64;
    static final int ENTRIES_PER_KEY = 1_024;
    static final long MAX_IDLE_MS = 3_600_000L;

    // Estimates for a 64-bit JVM with compressed references (object sizes rounded up to 8 bytes).
    private static final long MAP_NODE_BYTES = 32 + 8; // HashMap.Node and its share of the table
    private static final long BOXED_LONG_BYTES = 16;
    private static final long ENTRY_OBJECT_BYTES = 32; // Entry: time, value, items reference
    private static final long SLOT_OBJECT_BYTES = 32; // Slot: seq, value

    final Part<Long, SlidingWindowFeatures.Entry> log = new Part<>(this, LOG);
    final Part<String, long[]> items = new Part<>(this, ITEMS);
    final Part<Long, SlidingWindowFeatures.Slot> deques = new Part<>(this, DEQUES);
    private SlidingWindowFeatures.Meta meta; // null: read it from state
    private long metaBytes;
    private long bytes; // estimated heap of the meta value and the entries of log, items, deques
    private long lastUsedMs;
    private long counted; // bytes as last added to the total

    /** Entries held, of all three kinds. */
    int size() {
        return log.size() + items.size() + deques.size();
    }

    /** The key's meta value as the last call left it, or null. */
    SlidingWindowFeatures.Meta meta() {
        return meta;
    }

    /** Keep the key's meta value (changed in place by each call: weighed again each time). */
    void meta(SlidingWindowFeatures.Meta value) {
        bytes -= metaBytes;
        meta = value;
        metaBytes = value == null ? 0 : metaBytes(value);
        bytes += metaBytes;
    }

    /** The estimated heap of the entries held, hash map nodes and keys included. */
    long bytes() {
        return bytes;
    }

    private static final int LOG = 0;
    private static final int ITEMS = 1;
    private static final int DEQUES = 2;

    /**
     * One kind of a key's cached entries: a hash map that keeps its {@link KeyCache}'s byte
     * estimate on every put and remove. A value put back after a change in place must keep its
     * size (item counts do: one per window).
     */
    static final class Part<K, V> extends HashMap<K, V> {
        private final transient KeyCache owner;
        private final int kind;

        /**
         * Whether this part holds every entry the key has in state, so that a key missing here is
         * missing in state too: set by the function once it has cleared the key's state (from
         * then on every entry passes through this cache), unset as soon as an entry is not kept.
         * A new cache (a key not seen or dropped since, a restored job) knows nothing.
         */
        boolean complete;

        Part(KeyCache owner, int kind) {
            this.owner = owner;
            this.kind = kind;
        }

        @Override
        public V put(K key, V value) {
            V old = super.put(key, value);
            if (old != value) { // the same object put back: the same size
                owner.bytes += weigh(key, value) - (old == null ? 0 : weigh(key, old));
            }
            return old;
        }

        @Override
        public V remove(Object key) {
            V old = super.remove(key);
            if (old != null) {
                owner.bytes -= weigh(key, old);
            }
            return old;
        }

        @Override
        public void clear() {
            for (Map.Entry<K, V> entry : entrySet()) {
                owner.bytes -= weigh(entry.getKey(), entry.getValue());
            }
            super.clear();
        }

        /** What an entry takes on the heap: its hash map node, key and value. */
        private long weigh(Object key, Object value) {
            return MAP_NODE_BYTES
                    + switch (kind) {
                        case LOG -> BOXED_LONG_BYTES
                                + entryBytes((SlidingWindowFeatures.Entry) value);
                        case ITEMS -> stringBytes((String) key)
                                + arrayBytes(((long[]) value).length, 8);
                        default -> BOXED_LONG_BYTES + SLOT_OBJECT_BYTES;
                    };
        }
    }

    static long stringBytes(String value) {
        // String object (24) and its byte[] (16 + one byte per char, two if any is not Latin-1).
        if (value == null) {
            return 0;
        }
        boolean latin1 = true;
        for (int i = 0; i < value.length() && latin1; i++) {
            latin1 = value.charAt(i) < 256;
        }
        return 24 + arrayBytes(value.length(), latin1 ? 1 : 2);
    }

    static long arrayBytes(int length, int elementBytes) {
        return roundUp(16 + (long) length * elementBytes);
    }

    static long entryBytes(SlidingWindowFeatures.Entry entry) {
        long total = ENTRY_OBJECT_BYTES;
        if (entry.items != null) {
            total += arrayBytes(entry.items.length, 4);
            for (String item : entry.items) {
                total += stringBytes(item);
            }
        }
        return total;
    }

    static long metaBytes(SlidingWindowFeatures.Meta meta) {
        // The object: header, two longs and 13 array references.
        long total = roundUp(12 + 2 * 8 + 13 * 4);
        total += 6 * arrayBytes(meta.counts.length, 8); // heads ... sumsqs
        total += arrayBytes(meta.distincts.length, 8);
        total += 3 * arrayBytes(meta.dequeHeads.length, 8) + 2 * arrayBytes(2, 8);
        total += arrayBytes(meta.headItems.length, 4);
        for (String item : meta.headItems) {
            total += stringBytes(item);
        }
        return total;
    }

    private static long roundUp(long bytes) {
        return (bytes + 7) & ~7L;
    }

    /** The caches of the keys seen last, least recently used first. */
    static final class Keys {
        private final LinkedHashMap<Object, KeyCache> byKey =
                new LinkedHashMap<>(1024, 0.75f, true); // access order: least recent first
        private final long maxEntries;
        private final long maxBytes;
        private long total; // bytes, each key's own entry in byKey counted as one ENTRY_BYTES

        Keys(long maxEntries) {
            this.maxEntries = maxEntries;
            this.maxBytes = maxEntries * ENTRY_BYTES;
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
                cache.counted = ENTRY_BYTES; // the key itself
                total += ENTRY_BYTES;
                byKey.put(key, cache);
            }
            cache.lastUsedMs = nowMs;
            return cache;
        }

        /**
         * Account for what a call added to or removed from a key's cache; drop the least recently
         * used keys while over the budget, the key just used last (alone over it: it goes too).
         */
        void update(KeyCache cache) {
            long size = ENTRY_BYTES + cache.bytes;
            total += size - cache.counted;
            cache.counted = size;
            Iterator<KeyCache> oldest = byKey.values().iterator();
            while (total > maxBytes && oldest.hasNext()) {
                KeyCache dropped = oldest.next();
                total -= dropped.counted;
                oldest.remove();
            }
        }

        /** Keys held. */
        int keys() {
            return byKey.size();
        }

        /** The estimated heap of all keys' entries (as last accounted by {@link #update}). */
        long bytes() {
            return total;
        }
    }
}
