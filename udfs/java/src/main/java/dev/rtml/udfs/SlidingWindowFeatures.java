package dev.rtml.udfs;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

import org.apache.flink.table.annotation.ArgumentHint;
import org.apache.flink.table.annotation.ArgumentTrait;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.StateHint;
import org.apache.flink.table.api.dataview.MapView;
import org.apache.flink.table.functions.ProcessTableFunction;
import org.apache.flink.types.Row;

/**
 * Per-event sliding windows ("last N minutes as of this event, the event included") over several
 * window lengths at once, for one partition key, with a cost per event that does not grow with the
 * number of events in the windows.
 *
 * <p>Flink's OVER ... RANGE window walks every row of the key's window on each firing, so busy keys
 * (a card under attack, a popular merchant) get slower the busier they are. Here every event is
 * added once and evicted once per window: the windows keep running count, sum and sum of squares,
 * monotonic deques for min and max, and per-item counts for exact distinct counts, all in keyed
 * state (RocksDB), touched by point reads and writes only.
 *
 * <p>SQL: {@code SELECT * FROM SLIDING_WINDOW_FEATURES(input => TABLE events PARTITION BY card_id,
 * value_column => 'amount', item_column => 'merchant_id', windows => '1 min, 5 min, 1 h, 24 h',
 * on_time => DESCRIPTOR(event_time))}. Window i covers [t - length_i, t] for an event at time t.
 * The outputs are arrays with one element per window, in the order given.
 *
 * <p>Events of one key are aggregated in arrival order. An event older than the newest event seen
 * for its key is aggregated as of that newest event (its windows may already hold later events):
 * keep the input ordered per key (Kafka does, per partition) for exact as-of-event values.
 */
@DataTypeHint(
        "ROW<counts ARRAY<BIGINT>, sums ARRAY<DOUBLE>, avgs ARRAY<DOUBLE>, mins ARRAY<DOUBLE>, "
                + "maxs ARRAY<DOUBLE>, stddevs ARRAY<DOUBLE>, distincts ARRAY<BIGINT>>")
public class SlidingWindowFeatures extends ProcessTableFunction<Row> {

    /**
     * Idle keys' state expires this long after its last write (processing time). Timers would be
     * exact, but Flink 2.2 offers none to PTFs that pass columns through; so windows are capped at
     * {@link #MAX_WINDOW_MS}, leaving a job up to six days of backlog before state could expire
     * while still needed.
     */
    static final String STATE_TTL = "7 d";

    static final long MAX_WINDOW_MS = 86_400_000L;

    /**
     * Running aggregates and the positions of each window in the event log of one key. The ends of
     * each deque and each window's oldest entry are cached here, so that an event which evicts
     * nothing reads no other state.
     */
    public static class Meta {
        public long next;
        public long newest;
        public long[] heads; // per window: sequence number of its oldest entry
        public long[] headTimes; // per window: that entry's time, value and item
        public double[] headValues;
        public String[] headItems;
        public long[] counts;
        public double[] sums;
        public double[] sumsqs;
        public long[] distincts;
        public long[] dequeHeads; // per window: min deque at 2w, max deque at 2w+1
        public long[] dequeTails;
        public long[] frontSeqs; // per deque: the front slot (the window's min or max) ...
        public double[] frontValues;
        public double[] backValues; // ... and the value of the back slot
    }

    /** One event of the log: its time, value and item (for distinct counts). */
    public static class Entry {
        public long time;
        public double value;
        public String item;
    }

    /** A deque slot: which event, and its value. */
    public static class Slot {
        public long seq;
        public double value;
    }

    // Transient fields come back as null/0/false when Flink deserializes the function: no
    // initializers here, only "not resolved yet" states that those defaults mean.
    private transient String parsedSpec;
    private transient long[] lengths;
    private transient int longest;
    private transient boolean resolved;
    private transient int valueIndex;
    private transient int itemIndex;

    public void eval(
            Context ctx,
            @StateHint(name = "meta", ttl = STATE_TTL) Meta meta,
            @StateHint(name = "log", ttl = STATE_TTL) MapView<Long, Entry> log,
            @StateHint(name = "items", ttl = STATE_TTL) MapView<String, long[]> items,
            @StateHint(name = "deques", ttl = STATE_TTL) MapView<Long, Slot> deques,
            @ArgumentHint(
                            name = "input",
                            value = {
                                ArgumentTrait.SET_SEMANTIC_TABLE,
                                ArgumentTrait.PASS_COLUMNS_THROUGH,
                                ArgumentTrait.REQUIRE_ON_TIME
                            })
                    Row input,
            @ArgumentHint(name = "value_column") String valueColumn,
            @ArgumentHint(name = "item_column", isOptional = true) String itemColumn,
            @ArgumentHint(name = "windows") String windows)
            throws Exception {
        long[] windowLengths = lengths(windows);
        int n = windowLengths.length;
        resolveColumns(ctx, valueColumn, itemColumn);
        Object rawValue = input.getField(valueIndex);
        if (rawValue == null) {
            // Nothing to aggregate: NULL features for this row, state untouched, stream goes on.
            // (Feature SQL dead-letters such rows before they get here.)
            collect(Row.of(null, null, null, null, null, null, null));
            return;
        }
        long eventTime = ctx.timeContext(Long.class).time();
        if (meta.heads == null || eventTime - meta.newest > windowLengths[longest]) {
            // New key, or every window has emptied since its last event: start over without
            // reading old entries (some may have expired by TTL).
            log.clear();
            items.clear();
            deques.clear();
            reset(meta, n, eventTime);
        }
        long now = Math.max(eventTime, meta.newest);
        meta.newest = now;
        double value = ((Number) rawValue).doubleValue();
        Object rawItem = itemIndex < 0 ? null : input.getField(itemIndex);
        String item = rawItem == null ? null : rawItem.toString();

        // The longest window goes last: it deletes what it evicts from the log, and the others
        // may still need to read those entries to find their new oldest entry.
        for (int w = 0; w < n; w++) {
            if (w != longest) {
                evict(meta, log, items, deques, w, now - windowLengths[w]);
            }
        }
        evict(meta, log, items, deques, longest, now - windowLengths[longest]);

        long seq = meta.next++;
        Entry entry = new Entry();
        entry.time = now;
        entry.value = value;
        entry.item = item;
        log.put(seq, entry);
        long[] itemCounts = null;
        if (item != null) {
            itemCounts = items.get(item);
            if (itemCounts == null) {
                itemCounts = new long[n];
            }
        }
        for (int w = 0; w < n; w++) {
            if (meta.heads[w] == seq) { // the window was empty: this entry is its oldest
                meta.headTimes[w] = now;
                meta.headValues[w] = value;
                meta.headItems[w] = item;
            }
            meta.counts[w]++;
            meta.sums[w] += value;
            meta.sumsqs[w] += value * value;
            if (itemCounts != null && itemCounts[w]++ == 0) {
                meta.distincts[w]++;
            }
            push(meta, deques, 2 * w, seq, value, true);
            push(meta, deques, 2 * w + 1, seq, value, false);
        }
        if (itemCounts != null) {
            items.put(item, itemCounts);
        }

        Long[] counts = new Long[n];
        Double[] sums = new Double[n];
        Double[] avgs = new Double[n];
        Double[] mins = new Double[n];
        Double[] maxs = new Double[n];
        Double[] stddevs = new Double[n];
        Long[] distincts = new Long[n];
        for (int w = 0; w < n; w++) {
            long count = meta.counts[w];
            double mean = meta.sums[w] / count;
            counts[w] = count;
            sums[w] = meta.sums[w];
            avgs[w] = mean;
            mins[w] = meta.frontValues[2 * w];
            maxs[w] = meta.frontValues[2 * w + 1];
            stddevs[w] = Math.sqrt(Math.max(0.0, meta.sumsqs[w] / count - mean * mean));
            distincts[w] = itemIndex < 0 ? null : meta.distincts[w];
        }
        collect(Row.of(counts, sums, avgs, mins, maxs, stddevs, distincts));
    }

    private static void reset(Meta meta, int n, long eventTime) {
        meta.next = 0;
        meta.newest = eventTime;
        meta.heads = new long[n];
        meta.headTimes = new long[n];
        meta.headValues = new double[n];
        meta.headItems = new String[n];
        meta.counts = new long[n];
        meta.sums = new double[n];
        meta.sumsqs = new double[n];
        meta.distincts = new long[n];
        meta.dequeHeads = new long[2 * n];
        meta.dequeTails = new long[2 * n];
        meta.frontSeqs = new long[2 * n];
        meta.frontValues = new double[2 * n];
        meta.backValues = new double[2 * n];
    }

    private void evict(
            Meta meta,
            MapView<Long, Entry> log,
            MapView<String, long[]> items,
            MapView<Long, Slot> deques,
            int w,
            long oldestKept)
            throws Exception {
        while (meta.heads[w] < meta.next && meta.headTimes[w] < oldestKept) {
            long seq = meta.heads[w];
            double oldValue = meta.headValues[w];
            String oldItem = meta.headItems[w];
            meta.counts[w]--;
            meta.sums[w] -= oldValue;
            meta.sumsqs[w] -= oldValue * oldValue;
            if (oldItem != null) {
                long[] itemCounts = items.get(oldItem);
                if (--itemCounts[w] == 0) {
                    meta.distincts[w]--;
                }
                if (allZero(itemCounts)) {
                    items.remove(oldItem);
                } else {
                    items.put(oldItem, itemCounts);
                }
            }
            for (int d = 2 * w; d <= 2 * w + 1; d++) {
                if (meta.dequeHeads[d] < meta.dequeTails[d] && meta.frontSeqs[d] == seq) {
                    deques.remove(slotKey(d, meta.dequeHeads[d]));
                    meta.dequeHeads[d]++;
                    if (meta.dequeHeads[d] < meta.dequeTails[d]) {
                        Slot front = deques.get(slotKey(d, meta.dequeHeads[d]));
                        meta.frontSeqs[d] = front.seq;
                        meta.frontValues[d] = front.value;
                    }
                }
            }
            // The longest window holds the oldest events: what it evicts, no window needs.
            if (w == longest) {
                log.remove(seq);
            }
            meta.heads[w]++;
            if (meta.heads[w] < meta.next) {
                Entry head = log.get(meta.heads[w]);
                meta.headTimes[w] = head.time;
                meta.headValues[w] = head.value;
                meta.headItems[w] = head.item;
            }
        }
        if (meta.counts[w] == 0) {
            // Exact zero again: no float residue of added and removed values survives.
            meta.sums[w] = 0.0;
            meta.sumsqs[w] = 0.0;
        }
    }

    private static boolean allZero(long[] counts) {
        for (long count : counts) {
            if (count != 0) {
                return false;
            }
        }
        return true;
    }

    private static void push(
            Meta meta, MapView<Long, Slot> deques, int d, long seq, double value, boolean min)
            throws Exception {
        // Pop the back while it can never be the window's min (max) again: this value is newer
        // and at least as small (large).
        while (meta.dequeTails[d] > meta.dequeHeads[d]) {
            double back = meta.backValues[d];
            if (min ? back < value : back > value) {
                break;
            }
            meta.dequeTails[d]--;
            deques.remove(slotKey(d, meta.dequeTails[d]));
            if (meta.dequeTails[d] > meta.dequeHeads[d]) {
                meta.backValues[d] = deques.get(slotKey(d, meta.dequeTails[d] - 1)).value;
            }
        }
        Slot slot = new Slot();
        slot.seq = seq;
        slot.value = value;
        deques.put(slotKey(d, meta.dequeTails[d]), slot);
        if (meta.dequeTails[d] == meta.dequeHeads[d]) {
            meta.frontSeqs[d] = seq;
            meta.frontValues[d] = value;
        }
        meta.dequeTails[d]++;
        meta.backValues[d] = value;
    }

    private static long slotKey(int deque, long position) {
        return ((long) deque << 48) | position;
    }

    private static int longestIndex(long[] windowLengths) {
        int longest = 0;
        for (int w = 1; w < windowLengths.length; w++) {
            if (windowLengths[w] > windowLengths[longest]) {
                longest = w;
            }
        }
        return longest;
    }

    private void resolveColumns(Context ctx, String valueColumn, String itemColumn) {
        if (resolved) {
            return;
        }
        itemIndex = -1;
        List<String> names =
                org.apache.flink.table.types.DataType.getFieldNames(
                        ctx.tableSemanticsFor("input").dataType());
        valueIndex = names.indexOf(valueColumn);
        if (valueIndex < 0) {
            throw withoutRestarts(
                    new IllegalArgumentException(
                            "SLIDING_WINDOW_FEATURES: value_column '" + valueColumn + "' not in "
                                    + names));
        }
        if (itemColumn != null && !itemColumn.isEmpty()) {
            itemIndex = names.indexOf(itemColumn);
            if (itemIndex < 0) {
                throw withoutRestarts(
                        new IllegalArgumentException(
                                "SLIDING_WINDOW_FEATURES: item_column '" + itemColumn + "' not in "
                                        + names));
            }
        }
        resolved = true;
    }

    private long[] lengths(String spec) {
        if (spec.equals(parsedSpec)) {
            return lengths;
        }
        try {
            lengths = parseWindows(spec);
        } catch (IllegalArgumentException error) {
            throw withoutRestarts(error);
        }
        longest = longestIndex(lengths);
        parsedSpec = spec;
        return lengths;
    }

    /**
     * A wrong argument fails the same way on every restart: wrap it so Flink gives up at once
     * instead of restarting forever. SuppressRestartsException lives in flink-runtime, which every
     * cluster has but this jar does not compile against.
     */
    private static RuntimeException withoutRestarts(RuntimeException error) {
        try {
            return (RuntimeException)
                    Class.forName("org.apache.flink.runtime.execution.SuppressRestartsException")
                            .getConstructor(Throwable.class)
                            .newInstance(error);
        } catch (ReflectiveOperationException | ClassCastException notAvailable) {
            return error;
        }
    }

    /** "30 s, 5 min, 1 h, 24 h" -> milliseconds; units s, sec, m, min, h, hour, d, day. */
    static long[] parseWindows(String spec) {
        List<Long> parsed = new ArrayList<>();
        for (String part : spec.split(",")) {
            String text = part.trim().toLowerCase(Locale.ROOT).replace(" ", "");
            int split = 0;
            while (split < text.length() && Character.isDigit(text.charAt(split))) {
                split++;
            }
            if (split == 0 || split == text.length()) {
                throw new IllegalArgumentException("window '" + part.trim() + "': expected e.g. '5 min'");
            }
            long amount = Long.parseLong(text.substring(0, split));
            String unit = text.substring(split);
            long unitMs;
            switch (unit) {
                case "s", "sec", "second", "seconds" -> unitMs = 1_000L;
                case "m", "min", "minute", "minutes" -> unitMs = 60_000L;
                case "h", "hour", "hours" -> unitMs = 3_600_000L;
                case "d", "day", "days" -> unitMs = 86_400_000L;
                default -> throw new IllegalArgumentException(
                        "window '" + part.trim() + "': unknown unit '" + unit + "'");
            }
            if (amount <= 0) {
                throw new IllegalArgumentException("window '" + part.trim() + "' must be positive");
            }
            if (amount * unitMs > MAX_WINDOW_MS) {
                throw new IllegalArgumentException(
                        "window '" + part.trim() + "' is longer than the maximum of 24 h");
            }
            parsed.add(amount * unitMs);
        }
        long[] result = new long[parsed.size()];
        for (int i = 0; i < result.length; i++) {
            result[i] = parsed.get(i);
        }
        return result;
    }
}
