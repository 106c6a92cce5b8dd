package dev.rtml.udfs;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;

import org.apache.flink.table.api.dataview.MapView;
import org.junit.jupiter.api.Test;

/** A call's view of a key's map state through the key's cache, complete or not. */
class StateBufferTest {

    @Test
    void aCacheThatKnowsNothingReadsState() throws Exception {
        MapView<String, long[]> state = new MapView<>();
        state.put("0m1", new long[] {3}); // e.g. restored: this instance never saw it
        KeyCache cache = new KeyCache.Keys(1_000).of("card", 0);
        assertFalse(cache.items.complete);
        StateBuffer<String, long[]> call = new StateBuffer<>(state, cache.items, 10);
        assertArrayEquals(new long[] {3}, call.get("0m1"));
    }

    @Test
    void aCompleteCacheAnswersForStateUntilAnEntryIsNotKept() throws Exception {
        MapView<String, long[]> state = new MapView<>();
        KeyCache cache = new KeyCache.Keys(1_000).of("card", 0);
        StateBuffer<String, long[]> first = new StateBuffer<>(state, cache.items, 2);
        first.clear(); // as the function does for a new key, before it marks the cache complete
        cache.items.complete = true;
        assertNull(first.get("0new")); // not in the cache: not in state, and not read there
        first.put("0a", new long[] {1});
        first.put("0b", new long[] {1});
        first.put("0c", new long[] {1}); // over the limit of 2: in state only
        first.flush();
        assertEquals(2, cache.items.size());
        assertEquals(3, state.getMap().size());
        assertFalse(cache.items.complete, "an entry was not kept: the cache no longer knows all");

        StateBuffer<String, long[]> next = new StateBuffer<>(state, cache.items, 2);
        for (String key : new String[] {"0a", "0b", "0c"}) {
            assertArrayEquals(new long[] {1}, next.get(key), key);
        }
    }
}
