package dev.rtml.udfs;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** Which keys the heap state of offline runs keeps, with events as the function records them. */
class HeapWindowsTest {

    private static final long LONGEST_MS = 60_000;
    private static final long STEP_MS = 10; // event time between events
    private static final long LAG_MS = 1_000; // the watermark behind the newest event

    /** An event of `key` at `time`, leaving the key's meta value as the function would. */
    private static HeapWindows.Key see(HeapWindows heap, Object key, long time) {
        HeapWindows.Key held = heap.of(key, time - LAG_MS, LONGEST_MS);
        if (held.meta.heads == null) {
            held.meta.heads = new long[1];
        }
        held.meta.newest = Math.max(held.meta.newest, time);
        return held;
    }

    @Test
    void keysSeenOnceGoOnceTheirWindowsAreBehindTheWatermark() {
        HeapWindows heap = new HeapWindows();
        // A new key per event for 10,000 s of event time: 6,000 events per longest window.
        int most = 0;
        for (long i = 0; i < 1_000_000; i++) {
            see(heap, i, i * STEP_MS);
            most = Math.max(most, heap.size());
        }
        long perWindow = LONGEST_MS / STEP_MS;
        assertTrue(most <= 2 * perWindow + 2 * LAG_MS / STEP_MS + 200, "held at most " + most);
        assertTrue(most > perWindow, "held at most " + most); // the test itself is sound
    }

    @Test
    void aKeyWhoseLongestWindowStillHoldsEventsStays() {
        HeapWindows heap = new HeapWindows();
        HeapWindows.Key busy = see(heap, "busy", 0);
        for (long i = 1; i < 200_000; i++) {
            long time = i * STEP_MS;
            see(heap, i, time); // one-off keys that make the checks run
            if (i % 5_000 == 0) { // every 50 s: within the 60 s window of the one before
                assertSame(busy, see(heap, "busy", time), "the busy key was dropped at " + time);
            }
        }
    }

    @Test
    void keysStayWhileThereIsNoWatermark() {
        HeapWindows heap = new HeapWindows();
        for (long i = 0; i < 20_000; i++) {
            heap.of(i, i % 2 == 0 ? null : Long.MIN_VALUE, LONGEST_MS).meta.heads = new long[1];
        }
        assertEquals(20_000, heap.size());
    }

    @Test
    void keysWhoseStateWasNeverWrittenGoAtTheNextCheck() {
        HeapWindows heap = new HeapWindows();
        for (long i = 0; i < 1_000; i++) {
            heap.of("unwritten-" + i, 0L, LONGEST_MS); // asked for, then left as new (newest 0)
        }
        see(heap, "valued", 2 * LONGEST_MS); // the watermark moved on: a check
        see(heap, "valued", 2 * LONGEST_MS + STEP_MS);
        assertEquals(1, heap.size());
    }
}
