package dev.rtml.udfs;

import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;

import org.apache.flink.table.api.dataview.MapView;

/**
 * A keyed {@link MapView} as one call of a function sees it: what the call reads and writes is held
 * in memory until {@link #flush()}, so an entry read or written several times in one call costs at
 * most one state read and one state write (RocksDB: a JNI call and a (de)serialization each).
 *
 * <p>Reads go to the call's own entries first, then to {@code cache} (what earlier calls for the
 * same partition key left there, see {@link KeyCache}), and only then to the state, unless the
 * cache is {@link KeyCache.Part#complete}: then what it lacks, the state lacks too. The flush
 * writes every changed entry to the state and to the cache (a new entry only while the cache holds
 * fewer than {@code cacheLimit}). State stays the truth: the cache only saves reading back what
 * this function instance wrote or read, and a restored or rescaled job starts with new, empty
 * caches.
 *
 * <p>Values handed out by {@link #get} may be changed in place and {@link #put} back.
 */
final class StateBuffer<K, V> {

    private static final Object REMOVED = new Object();

    private final MapView<K, V> state;
    private final KeyCache.Part<K, V> cache; // null: direct
    private final int cacheLimit;
    private final Map<K, Object> touched; // read or written: value or REMOVED
    private final Set<K> dirty; // written

    StateBuffer(MapView<K, V> state, KeyCache.Part<K, V> cache, int cacheLimit) {
        this.state = state;
        this.cache = cache;
        this.cacheLimit = cacheLimit;
        this.touched = new HashMap<>();
        this.dirty = new HashSet<>();
    }

    private StateBuffer(MapView<K, V> state) {
        this.state = state;
        this.cache = null;
        this.cacheLimit = 0;
        this.touched = null;
        this.dirty = null;
    }

    /**
     * Reads and writes straight to {@code state}, {@link #flush()} a no-op: for state that is a
     * plain map on the heap ({@link HeapWindows}), where a buffer and a cache only cost.
     */
    static <K, V> StateBuffer<K, V> direct(MapView<K, V> state) {
        return new StateBuffer<>(state);
    }

    @SuppressWarnings("unchecked")
    V get(K key) throws Exception {
        if (cache == null) {
            return state.get(key);
        }
        Object held = touched.get(key);
        if (held != null) {
            return held == REMOVED ? null : (V) held;
        }
        V value = cache.get(key);
        if (value == null && !cache.complete) {
            value = state.get(key);
        }
        touched.put(key, value == null ? REMOVED : value);
        return value;
    }

    void put(K key, V value) throws Exception {
        if (cache == null) {
            state.put(key, value);
            return;
        }
        touched.put(key, value);
        dirty.add(key);
    }

    void remove(K key) throws Exception {
        if (cache == null) {
            state.remove(key);
            return;
        }
        touched.put(key, REMOVED);
        dirty.add(key);
    }

    /** Empty the state, the cache and this call's entries. */
    void clear() throws Exception {
        if (cache == null) {
            state.clear();
            return;
        }
        touched.clear();
        dirty.clear();
        cache.clear();
        state.clear();
    }

    /** Write what was put or removed since the last flush, once each, to state and cache. */
    @SuppressWarnings("unchecked")
    void flush() throws Exception {
        if (cache == null) {
            return;
        }
        for (K key : dirty) {
            Object value = touched.get(key);
            if (value == REMOVED) {
                state.remove(key);
                cache.remove(key);
            } else {
                state.put(key, (V) value);
                if (cache.size() < cacheLimit || cache.containsKey(key)) {
                    cache.put(key, (V) value);
                } else {
                    cache.complete = false;
                }
            }
        }
        dirty.clear();
        touched.clear();
    }
}
