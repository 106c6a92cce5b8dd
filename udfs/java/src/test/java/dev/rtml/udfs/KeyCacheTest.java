package dev.rtml.udfs;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** The key cache's memory bound: an estimate of heap bytes, whatever the item values' length. */
class KeyCacheTest {

    private static SlidingWindowFeatures.Entry entry(long time, String... items) {
        SlidingWindowFeatures.Entry entry = new SlidingWindowFeatures.Entry();
        entry.time = time;
        entry.value = time;
        entry.items = items;
        return entry;
    }

    private static SlidingWindowFeatures.Slot slot(long seq) {
        SlidingWindowFeatures.Slot slot = new SlidingWindowFeatures.Slot();
        slot.seq = seq;
        slot.value = seq;
        return slot;
    }

    /** A key's event as the function caches it: a log entry, its three item counts, two slots. */
    private static void see(KeyCache.Keys keys, Object key, long seq, String merchant, String ip) {
        KeyCache cache = keys.of(key, 0);
        cache.log.put(seq, entry(seq, merchant, "US", ip));
        cache.log.remove(seq - KeyCache.LOG_ENTRIES_PER_KEY);
        cache.items.put("0" + merchant, new long[4]);
        cache.items.put("1US", new long[4]);
        cache.items.put("2" + ip, new long[4]);
        cache.deques.put(seq % 8, slot(seq));
        cache.deques.put((1L << 48) | (seq % 8), slot(seq));
        keys.update(cache);
    }

    @Test
    void theEstimateGoesBackToZeroWhenEverythingIsRemoved() {
        KeyCache cache = new KeyCache.Keys(1_000).of("card", 0);
        cache.log.put(1L, entry(1, "m1", "US", "10.0.0.1"));
        cache.log.put(1L, entry(1, "a much longer merchant name", null, "10.0.0.1")); // replaced
        cache.log.put(2L, entry(2, "m2", "FR", "10.0.0.2"));
        long[] counts = new long[4];
        cache.items.put("0m1", counts);
        counts[0]++;
        cache.items.put("0m1", counts); // changed in place and put back
        cache.items.put("1US", new long[4]);
        cache.deques.put(7L, slot(7));
        assertTrue(cache.bytes() > 0);
        assertEquals(5, cache.size());

        cache.log.remove(1L);
        cache.log.remove(3L); // not there: nothing changes
        cache.items.remove("0m1");
        cache.deques.clear();
        cache.log.clear();
        cache.items.clear();
        assertEquals(0, cache.size());
        assertEquals(0, cache.bytes());
    }

    @Test
    void theMetaValueIsWeighedEachTimeItIsKept() {
        KeyCache cache = new KeyCache.Keys(1_000).of("card", 0);
        SlidingWindowFeatures.Meta meta = MetaBytesTest.sample(4, 4);
        cache.meta(meta);
        long held = cache.bytes();
        assertTrue(held > 4 * 300, "four 300-char items and the arrays: " + held);
        meta.headItems[3] = null; // changed in place, kept again: weighed anew
        cache.meta(meta);
        assertTrue(cache.bytes() < held - 300, held + " -> " + cache.bytes());
        cache.meta(null);
        assertEquals(0, cache.bytes());
    }

    @Test
    void longItemValuesWeighMoreThanShortOnes() {
        SlidingWindowFeatures.Entry shortItems = entry(1, "m123", "US", "10.1.2.3");
        SlidingWindowFeatures.Entry longItems = entry(1, "m".repeat(2_000), "US", "10.1.2.3");
        long shortBytes = KeyCache.entryBytes(shortItems);
        long longBytes = KeyCache.entryBytes(longItems);
        assertTrue(longBytes - shortBytes >= 1_990, shortBytes + " -> " + longBytes);
        // Outside Latin-1 a character takes two bytes.
        long latin1 = KeyCache.stringBytes("x".repeat(100));
        long utf16 = KeyCache.stringBytes("\u4e2d".repeat(100));
        assertTrue(utf16 - latin1 >= 90, latin1 + " -> " + utf16);
    }

    @Test
    void theBudgetHoldsWhateverTheItemValuesLength() {
        long maxEntries = 100_000; // 20 MB
        long budget = maxEntries * KeyCache.ENTRY_BYTES;
        for (int itemLength : new int[] {8, 200, 2_000}) {
            KeyCache.Keys keys = new KeyCache.Keys(maxEntries);
            String padding = "x".repeat(itemLength);
            long most = 0;
            for (long seq = 0; seq < 40_000; seq++) {
                long card = seq % 500; // 80 events each
                see(keys, card, seq, padding + (seq % 37), padding + card);
                most = Math.max(most, keys.bytes());
            }
            assertTrue(most <= budget, itemLength + "-char items: " + most + " bytes held");
            // The test is sound: short items fit every card's entries (14.3 MB), long ones reach
            // the budget (counting entries instead, 2,000-char items would hold ~400 MB).
            if (itemLength == 8) {
                assertTrue(most < budget * 3 / 4, "8-char items: " + most);
            } else {
                assertTrue(most > budget * 9 / 10, itemLength + "-char items: " + most);
            }
        }
    }

    @Test
    void aKeyAloneOverTheBudgetIsNotKept() {
        KeyCache.Keys keys = new KeyCache.Keys(10); // 2,000 bytes
        see(keys, "card", 0, "m".repeat(5_000), "10.0.0.1");
        assertEquals(0, keys.keys());
        assertEquals(0, keys.bytes());
    }
}
