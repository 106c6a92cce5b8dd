package dev.rtml.udfs;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** A key's meta value as the bytes in its state, and back. */
class MetaBytesTest {

    /** Every field different from its neighbours, so that a field read in another's place shows. */
    static SlidingWindowFeatures.Meta sample(int n, int m) {
        SlidingWindowFeatures.Meta meta = new SlidingWindowFeatures.Meta();
        long next = 1;
        meta.next = next++;
        meta.newest = 1_763_700_000_000L;
        meta.heads = longs(n, next++);
        meta.headTimes = longs(n, next++);
        meta.headValues = doubles(n, next++);
        meta.headItems = new String[n * m];
        for (int i = 0; i < meta.headItems.length; i++) {
            // NULLs, empty strings, non-Latin-1 and long values all come back as they were.
            meta.headItems[i] = switch (i % 4) {
                case 0 -> null;
                case 1 -> "";
                case 2 -> "\u4e2d\u6587-" + i;
                default -> "m".repeat(300) + i;
            };
        }
        meta.counts = longs(n, next++);
        meta.sums = doubles(n, next++);
        meta.sumsqs = doubles(n, next++);
        meta.distincts = longs(m * n, next++);
        meta.dequeHeads = longs(2 * n, next++);
        meta.dequeTails = longs(2, next++);
        meta.frontSeqs = longs(2 * n, next++);
        meta.frontValues = doubles(2 * n, next++);
        meta.backValues = new double[] {-0.0, Double.NaN};
        return meta;
    }

    private static long[] longs(int length, long seed) {
        long[] values = new long[length];
        for (int i = 0; i < length; i++) {
            values[i] = seed * 1_000 + i;
        }
        return values;
    }

    private static double[] doubles(int length, long seed) {
        double[] values = new double[length];
        for (int i = 0; i < length; i++) {
            values[i] = seed * 1_000 + i + 0.25;
        }
        return values;
    }

    @Test
    void aMetaValueComesBackAsItWas() {
        for (int[] shape : new int[][] {{4, 4}, {1, 0}, {3, 8}, {200, 2}}) { // windows, items
            SlidingWindowFeatures.Meta meta = sample(shape[0], shape[1]);
            SlidingWindowFeatures.Meta back = MetaBytes.decode(MetaBytes.encode(meta));
            assertEquals(meta.next, back.next);
            assertEquals(meta.newest, back.newest);
            assertArrayEquals(meta.heads, back.heads);
            assertArrayEquals(meta.headTimes, back.headTimes);
            assertArrayEquals(meta.headValues, back.headValues);
            assertArrayEquals(meta.headItems, back.headItems);
            assertArrayEquals(meta.counts, back.counts);
            assertArrayEquals(meta.sums, back.sums);
            assertArrayEquals(meta.sumsqs, back.sumsqs);
            assertArrayEquals(meta.distincts, back.distincts);
            assertArrayEquals(meta.dequeHeads, back.dequeHeads);
            assertArrayEquals(meta.dequeTails, back.dequeTails);
            assertArrayEquals(meta.frontSeqs, back.frontSeqs);
            assertArrayEquals(meta.frontValues, back.frontValues);
            assertArrayEquals(meta.backValues, back.backValues);
        }
    }

    @Test
    void bytesOfAnotherLayoutAreRefused() {
        byte[] bytes = MetaBytes.encode(sample(2, 1));
        bytes[0] = (byte) (SlidingWindowFeatures.STATE_LAYOUT + 1);
        IllegalStateException error =
                assertThrows(IllegalStateException.class, () -> MetaBytes.decode(bytes));
        assertTrue(error.getMessage().contains("layout"), error.getMessage());
    }
}
