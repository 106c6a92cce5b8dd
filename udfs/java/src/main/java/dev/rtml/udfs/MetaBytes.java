package dev.rtml.udfs;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;

/**
 * {@link SlidingWindowFeatures.Meta} as the bytes its keyed state holds (state layout 4 on).
 *
 * <p>Up to layout 3 the meta value was a POJO state argument: Flink's table runtime read it from
 * RocksDB before every call, converted it to its internal row and back, hashed it to see whether
 * it changed and serialized it again (a sixth of the function's thread in a profile of fraud_card's
 * windows). As bytes in a map entry it is read only when the key's cache misses, and written as
 * one array.
 *
 * <p>Format: the layout (one byte), n windows and m item columns (two bytes each), then the fields
 * of {@link SlidingWindowFeatures.Meta} in declaration order: longs and doubles as 8 bytes, the
 * items as a length (-1 for NULL) and their UTF-8 bytes.
 */
final class MetaBytes {

    private MetaBytes() {}

    static byte[] encode(SlidingWindowFeatures.Meta meta) {
        int n = meta.counts.length;
        int m = n == 0 ? 0 : meta.distincts.length / n;
        byte[][] items = new byte[meta.headItems.length][];
        int itemBytes = 0;
        for (int i = 0; i < items.length; i++) {
            String item = meta.headItems[i];
            items[i] = item == null ? null : item.getBytes(StandardCharsets.UTF_8);
            itemBytes += 4 + (item == null ? 0 : items[i].length);
        }
        // next, newest; per window heads, headTimes, headValues, counts, sums, sumsqs (6n);
        // distincts (mn); per deque front: dequeHeads, frontSeqs, frontValues (3 * 2n);
        // per deque: dequeTails, backValues (2 * 2).
        int longs = 2 + 6 * n + m * n + 6 * n + 4;
        ByteBuffer out = ByteBuffer.allocate(5 + 8 * longs + itemBytes);
        out.put((byte) SlidingWindowFeatures.STATE_LAYOUT).putShort((short) n).putShort((short) m);
        out.putLong(meta.next).putLong(meta.newest);
        putLongs(out, meta.heads);
        putLongs(out, meta.headTimes);
        putDoubles(out, meta.headValues);
        for (byte[] item : items) {
            if (item == null) {
                out.putInt(-1);
            } else {
                out.putInt(item.length).put(item);
            }
        }
        putLongs(out, meta.counts);
        putDoubles(out, meta.sums);
        putDoubles(out, meta.sumsqs);
        putLongs(out, meta.distincts);
        putLongs(out, meta.dequeHeads);
        putLongs(out, meta.dequeTails);
        putLongs(out, meta.frontSeqs);
        putDoubles(out, meta.frontValues);
        putDoubles(out, meta.backValues);
        return out.array();
    }

    /** The meta value of `bytes`; an error if they were written by another layout. */
    static SlidingWindowFeatures.Meta decode(byte[] bytes) {
        ByteBuffer in = ByteBuffer.wrap(bytes);
        int layout = in.get();
        if (layout != SlidingWindowFeatures.STATE_LAYOUT) {
            throw new IllegalStateException(
                    "meta value of state layout " + layout + ", expected "
                            + SlidingWindowFeatures.STATE_LAYOUT);
        }
        int n = in.getShort();
        int m = in.getShort();
        SlidingWindowFeatures.Meta meta = new SlidingWindowFeatures.Meta();
        meta.next = in.getLong();
        meta.newest = in.getLong();
        meta.heads = getLongs(in, n);
        meta.headTimes = getLongs(in, n);
        meta.headValues = getDoubles(in, n);
        meta.headItems = new String[n * m];
        for (int i = 0; i < meta.headItems.length; i++) {
            int length = in.getInt();
            if (length >= 0) {
                meta.headItems[i] =
                        new String(bytes, in.position(), length, StandardCharsets.UTF_8);
                in.position(in.position() + length);
            }
        }
        meta.counts = getLongs(in, n);
        meta.sums = getDoubles(in, n);
        meta.sumsqs = getDoubles(in, n);
        meta.distincts = getLongs(in, m * n);
        meta.dequeHeads = getLongs(in, 2 * n);
        meta.dequeTails = getLongs(in, 2);
        meta.frontSeqs = getLongs(in, 2 * n);
        meta.frontValues = getDoubles(in, 2 * n);
        meta.backValues = getDoubles(in, 2);
        return meta;
    }

    private static void putLongs(ByteBuffer out, long[] values) {
        for (long value : values) {
            out.putLong(value);
        }
    }

    private static void putDoubles(ByteBuffer out, double[] values) {
        for (double value : values) {
            out.putDouble(value);
        }
    }

    private static long[] getLongs(ByteBuffer in, int length) {
        long[] values = new long[length];
        for (int i = 0; i < length; i++) {
            values[i] = in.getLong();
        }
        return values;
    }

    private static double[] getDoubles(ByteBuffer in, int length) {
        double[] values = new double[length];
        for (int i = 0; i < length; i++) {
            values[i] = in.getDouble();
        }
        return values;
    }
}
