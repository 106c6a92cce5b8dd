package dev.rtml.udfs;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;

import org.apache.flink.table.annotation.ArgumentHint;
import org.apache.flink.table.annotation.ArgumentTrait;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.StateHint;
import org.apache.flink.table.api.dataview.MapView;
import org.apache.flink.table.functions.FunctionContext;
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
 * monotonic deques for min and max, and per-item counts for exact distinct and "same item" counts,
 * all in keyed state (RocksDB), touched by point reads and writes only.
 *
 * <p>SQL: {@code SELECT * FROM SLIDING_WINDOW_FEATURES(input => TABLE events PARTITION BY card_id,
 * value_column => 'amount', item_columns => 'merchant_id, country, ip', windows => '1 min, 5 min,
 * 1 h, 24 h', on_time => DESCRIPTOR(event_time))}. Window w covers [t - length_w, t] for an event at
 * time t. Outputs, one element per window in the order given: counts, sums, avgs, mins, maxs,
 * stddevs (population); per item column i (in the order given, at most {@link #MAX_ITEM_COLUMNS}):
 * distincts[i][w], the number of distinct non-NULL values of column i in window w, and
 * item_counts[i][w], the number of events in window w whose column i equals this event's (this
 * event included; item_counts[i] is NULL when this event's value of column i is NULL). Without
 * item_columns both are empty arrays. A row whose value is NULL gets NULL outputs and leaves the
 * state untouched.
 *
 * <p>State reads and writes go through memory: one call reads and writes each state entry at most
 * once ({@link StateBuffer}), and the entries of the keys seen last stay in a write-through cache
 * ({@link KeyCache}), so a key's next event reads its meta value, item counts, deque ends and
 * recent log entries without RocksDB. The optional argument {@code cache_entries} bounds that
 * cache's estimated heap, in entries of {@link KeyCache#ENTRY_BYTES} (default {@link
 * KeyCache#DEFAULT_MAX_ENTRIES}, about 100 MB; 0 turns it off). State alone is the
 * truth: a restored job starts with an empty cache and gives the same features.
 *
 * <p>Bounded runs that never checkpoint nor restore (rtml.offline) set the job parameter {@link
 * HeapWindows#JOB_PARAMETER}: every key's state then lives on this instance's heap ({@link
 * HeapWindows}) and keyed state stays empty. The same code computes the same features.
 *
 * <p>Events of one key are aggregated in arrival order. An event older than the newest event seen
 * for its key is aggregated as of that newest event (its windows may already hold later events):
 * keep the input ordered per key (Kafka does, per partition) for exact as-of-event values.
 *
 * <p>State layout ({@link #STATE_LAYOUT}; n windows, m item columns; every state entry expires
 * after {@link #STATE_TTL} without writes). It depends on the number and order of windows and
 * item columns, so a query that changes either needs fresh state (a different number of either is
 * refused):
 *
 * <ul>
 *   <li>{@code meta_bytes} (map with the one key 0, {@link MetaBytes}): the key's {@link Meta},
 *       the running aggregates and the cached ends of each window and deque, as bytes.
 *       Per-window arrays have n elements; {@code dequeHeads}, {@code frontSeqs} and {@code
 *       frontValues} 2n (window w's front in the min deque at 2w, in the max deque at
 *       2w+1); {@code dequeTails} and {@code backValues} 2 (min, max); {@code headItems} n*m
 *       (window-major: w*m + i); {@code distincts} m*n (column-major: i*n + w).
 *   <li>{@code log} (map, sequence number -> {@link Entry}): the events still in the longest
 *       window, with their time, value and m items.
 *   <li>{@code items} (map, item key -> long[n]): for each item value present in some window, how
 *       many events of each window hold it. The item key is one char, {@code '0' + i}, followed by
 *       the value as a string, so equal values of different columns are counted apart.
 *   <li>{@code deques} (map, (deque << 48) | position -> {@link Slot}): two monotonic deques
 *       over the longest window, 0 for minimums and 1 for maximums. They serve every window: the
 *       minimum of window w is the first slot of the min deque whose event is in w (its front),
 *       because each slot is the minimum of the events from its own onwards. So an event costs
 *       two deque writes whatever the number of windows (layout 2 kept two deques per window).
 * </ul>
 *
 * <p>Layout 3 kept the meta value as a state of its own (a POJO, which Flink read, converted,
 * hashed and wrote again on every call), layout 2 also a min and a max deque per window. State of
 * either is refused with a clear error: a key with a log but no meta value.
 */
@DataTypeHint(
        "ROW<counts ARRAY<BIGINT>, sums ARRAY<DOUBLE>, avgs ARRAY<DOUBLE>, mins ARRAY<DOUBLE>, "
                + "maxs ARRAY<DOUBLE>, stddevs ARRAY<DOUBLE>, distincts ARRAY<ARRAY<BIGINT>>, "
                + "item_counts ARRAY<ARRAY<BIGINT>>>")
public class SlidingWindowFeatures extends ProcessTableFunction<Row> {

    /**
     * Idle keys' state expires this long after its last write (processing time). Timers would be
     * exact, but Flink 2.2 offers none to PTFs that pass columns through; so windows are capped at
     * {@link #MAX_WINDOW_MS}, leaving a job up to six days of backlog before state could expire
     * while still needed.
     */
    static final String STATE_TTL = "7 d";

    static final long MAX_WINDOW_MS = 86_400_000L;

    /** The state layout described above; rtml.versions.SLIDING_WINDOW_STATE_LAYOUT repeats it. */
    static final int STATE_LAYOUT = 4;

    /**
     * Each item column costs a state read and write per event and per eviction; the bound keeps
     * that cost in sight, and the one-char column prefix of item keys unambiguous.
     */
    static final int MAX_ITEM_COLUMNS = 8;

    /** The one key of the meta_bytes map: a key's meta value. */
    private static final Integer META_KEY = 0;

    /** The two deques: windows' minimums and maximums. */
    private static final int MIN = 0;

    private static final int MAX = 1;

    /**
     * Running aggregates and the positions of each window in the event log of one key. The ends of
     * each deque and each window's oldest entry are cached here, so that an event which evicts
     * nothing reads no other state.
     */
    public static class Meta {
        public long next;
        public long newest;
        public long[] heads; // per window: sequence number of its oldest entry
        public long[] headTimes; // per window: that entry's time, value and items
        public double[] headValues;
        public String[] headItems; // [w * m + i]
        public long[] counts;
        public double[] sums;
        public double[] sumsqs;
        public long[] distincts; // [i * n + w]
        public long[] dequeHeads; // per window: its front in the min deque at 2w, max at 2w+1
        public long[] dequeTails; // per deque (0: min, 1: max): its end
        public long[] frontSeqs; // per window, as dequeHeads: the front slot (its min or max)
        public double[] frontValues;
        public double[] backValues; // per deque: the value of its back slot
    }

    /** One event of the log: its time, value and items (one per item column, NULL allowed). */
    public static class Entry {
        public long time;
        public double value;
        public String[] items;
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
    private transient int[] itemIndexes;
    private transient int[] partitionIndexes;
    private transient KeyCache.Keys cachedKeys;
    private transient HeapWindows heap; // null: keyed state holds the windows

    @Override
    public void open(FunctionContext context) throws Exception {
        super.open(context);
        if (Boolean.parseBoolean(context.getJobParameter(HeapWindows.JOB_PARAMETER, "false"))) {
            heap = new HeapWindows();
        }
    }

    public void eval(
            Context ctx,
            @StateHint(name = "meta_bytes", ttl = STATE_TTL) MapView<Integer, byte[]> metaState,
            @StateHint(name = "log", ttl = STATE_TTL) MapView<Long, Entry> logState,
            @StateHint(name = "items", ttl = STATE_TTL) MapView<String, long[]> itemsState,
            @StateHint(name = "deques", ttl = STATE_TTL) MapView<Long, Slot> dequesState,
            @ArgumentHint(
                            name = "input",
                            value = {
                                ArgumentTrait.SET_SEMANTIC_TABLE,
                                ArgumentTrait.PASS_COLUMNS_THROUGH,
                                ArgumentTrait.REQUIRE_ON_TIME
                            })
                    Row input,
            @ArgumentHint(name = "value_column") String valueColumn,
            @ArgumentHint(name = "item_columns", isOptional = true) String itemColumns,
            @ArgumentHint(name = "windows") String windows,
            // Replaced by item_columns. Declared only to refuse it: Flink 2.2 ignores named
            // arguments a function does not declare, so an old query would silently lose its
            // distinct counts.
            @ArgumentHint(name = "item_column", isOptional = true) String oldItemColumn,
            @ArgumentHint(name = "cache_entries", isOptional = true) Integer cacheEntries)
            throws Exception {
        if (oldItemColumn != null) {
            throw withoutRestarts(
                    new IllegalArgumentException(
                            "SLIDING_WINDOW_FEATURES: item_column was replaced by item_columns"
                                    + " (a comma-separated list): write item_columns => '"
                                    + oldItemColumn
                                    + "'"));
        }
        long[] windowLengths = lengths(windows);
        int n = windowLengths.length;
        resolveColumns(ctx, valueColumn, itemColumns);
        int m = itemIndexes.length;
        Object rawValue = input.getField(valueIndex);
        if (rawValue == null) {
            // Nothing to aggregate: NULL features for this row, state untouched, stream goes on.
            // (Feature SQL dead-letters such rows before they get here.)
            collect(Row.of(null, null, null, null, null, null, null, null));
            return;
        }
        ProcessTableFunction.TimeContext<Long> time = ctx.timeContext(Long.class);
        long eventTime = time.time();
        if (cachedKeys == null) {
            cachedKeys = new KeyCache.Keys(cacheEntries(cacheEntries)); // checked in both modes
        }
        Object partition = partitionKey(input);
        KeyCache cached = null;
        Meta meta;
        StateBuffer<Long, Entry> log;
        StateBuffer<String, long[]> items;
        StateBuffer<Long, Slot> deques;
        if (heap != null) {
            HeapWindows.Key held = heap.of(partition, time.currentWatermark(), windowLengths[longest]);
            meta = held.meta;
            // The maps are the state, in memory already: read and written in place, no buffer,
            // no cache.
            log = StateBuffer.direct(held.log);
            items = StateBuffer.direct(held.items);
            deques = StateBuffer.direct(held.deques);
        } else {
            cached = cachedKeys.of(partition, System.currentTimeMillis());
            meta = cached.meta();
            if (meta == null) {
                meta = readMeta(metaState, logState);
            }
            int recentLog = cachedKeys.limit(KeyCache.LOG_ENTRIES_PER_KEY + 1);
            log = new StateBuffer<>(logState, cached.log, recentLog);
            items =
                    new StateBuffer<>(
                            itemsState, cached.items, cachedKeys.limit(KeyCache.ENTRIES_PER_KEY));
            deques =
                    new StateBuffer<>(
                            dequesState, cached.deques, cachedKeys.limit(KeyCache.ENTRIES_PER_KEY));
        }
        if (meta.heads == null || eventTime - meta.newest > windowLengths[longest]) {
            // New key, or every window has emptied since its last event: start over without
            // reading old entries (some may have expired by TTL).
            log.clear();
            items.clear();
            deques.clear();
            if (cached != null) {
                // From now on each item count and deque slot of the key passes through the cache:
                // one it lacks is not in state either (until one is not kept), so a value new to
                // the key's windows costs no state read. The log cache keeps only recent entries.
                cached.items.complete = true;
                cached.deques.complete = true;
            }
            reset(meta, n, m, eventTime);
        } else if (meta.counts.length != n || meta.distincts.length != n * m) {
            throw withoutRestarts(
                    new IllegalStateException(
                            "SLIDING_WINDOW_FEATURES: the state was built for "
                                    + meta.counts.length
                                    + " windows and "
                                    + meta.distincts.length / meta.counts.length
                                    + " item columns, the query asks for "
                                    + n
                                    + " and "
                                    + m
                                    + ": run the changed query without the old state"));
        }
        long now = Math.max(eventTime, meta.newest);
        meta.newest = now;
        double value = ((Number) rawValue).doubleValue();
        String[] eventItems = new String[m];
        for (int i = 0; i < m; i++) {
            Object rawItem = input.getField(itemIndexes[i]);
            eventItems[i] = rawItem == null ? null : rawItem.toString();
        }

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
        entry.items = eventItems;
        log.put(seq, entry);
        if (cached != null) {
            cached.log.remove(seq - KeyCache.LOG_ENTRIES_PER_KEY); // only the recent ones stay cached
        }
        for (int w = 0; w < n; w++) {
            if (meta.heads[w] == seq) { // the window was empty: this entry is its oldest
                meta.headTimes[w] = now;
                meta.headValues[w] = value;
                System.arraycopy(eventItems, 0, meta.headItems, w * m, m);
            }
            meta.counts[w]++;
            meta.sums[w] += value;
            meta.sumsqs[w] += value * value;
        }
        push(meta, deques, MIN, seq, value);
        push(meta, deques, MAX, seq, value);
        Long[][] itemCountsOut = new Long[m][];
        for (int i = 0; i < m; i++) {
            if (eventItems[i] == null) {
                continue; // counted nowhere; item_counts[i] stays NULL
            }
            String key = itemKey(i, eventItems[i]);
            long[] itemCounts = items.get(key);
            if (itemCounts == null) {
                itemCounts = new long[n];
            }
            Long[] out = new Long[n];
            for (int w = 0; w < n; w++) {
                if (itemCounts[w]++ == 0) {
                    meta.distincts[i * n + w]++;
                }
                out[w] = itemCounts[w];
            }
            items.put(key, itemCounts);
            itemCountsOut[i] = out;
        }
        log.flush();
        items.flush();
        deques.flush();
        if (cached != null) {
            metaState.put(META_KEY, MetaBytes.encode(meta));
            if (cachedKeys.limit(1) > 0) {
                cached.meta(meta);
            }
            cachedKeys.update(cached);
        }

        Long[] counts = new Long[n];
        Double[] sums = new Double[n];
        Double[] avgs = new Double[n];
        Double[] mins = new Double[n];
        Double[] maxs = new Double[n];
        Double[] stddevs = new Double[n];
        for (int w = 0; w < n; w++) {
            long count = meta.counts[w];
            double mean = meta.sums[w] / count;
            counts[w] = count;
            sums[w] = meta.sums[w];
            avgs[w] = mean;
            mins[w] = meta.frontValues[2 * w];
            maxs[w] = meta.frontValues[2 * w + 1];
            stddevs[w] = Math.sqrt(Math.max(0.0, meta.sumsqs[w] / count - mean * mean));
        }
        Long[][] distincts = new Long[m][n];
        for (int i = 0; i < m; i++) {
            for (int w = 0; w < n; w++) {
                distincts[i][w] = meta.distincts[i * n + w];
            }
        }
        collect(Row.of(counts, sums, avgs, mins, maxs, stddevs, distincts, itemCountsOut));
    }

    /**
     * A key's meta value from state, or a new one for a key without state. A log without a meta
     * value is state of layout 3 or older (their meta value was a state of its own): refused.
     */
    private static Meta readMeta(MapView<Integer, byte[]> metaState, MapView<Long, Entry> logState)
            throws Exception {
        byte[] saved = metaState.get(META_KEY);
        if (saved != null) {
            try {
                return MetaBytes.decode(saved);
            } catch (IllegalStateException otherLayout) {
                throw withoutRestarts(olderLayout(otherLayout.getMessage()));
            }
        }
        if (!logState.isEmpty()) {
            throw withoutRestarts(olderLayout("a log without a meta value"));
        }
        return new Meta();
    }

    private static IllegalStateException olderLayout(String found) {
        return new IllegalStateException(
                "SLIDING_WINDOW_FEATURES: the state was written by an earlier version of this"
                        + " function (" + found + ": state layout 3 or older; now layout "
                        + STATE_LAYOUT + "): run the query without the old state (start fresh or"
                        + " backfill)");
    }

    private static void reset(Meta meta, int n, int m, long eventTime) {
        meta.next = 0;
        meta.newest = eventTime;
        meta.heads = new long[n];
        meta.headTimes = new long[n];
        meta.headValues = new double[n];
        meta.headItems = new String[n * m];
        meta.counts = new long[n];
        meta.sums = new double[n];
        meta.sumsqs = new double[n];
        meta.distincts = new long[m * n];
        meta.dequeHeads = new long[2 * n];
        meta.dequeTails = new long[2];
        meta.frontSeqs = new long[2 * n];
        meta.frontValues = new double[2 * n];
        meta.backValues = new double[2];
    }

    private void evict(
            Meta meta,
            StateBuffer<Long, Entry> log,
            StateBuffer<String, long[]> items,
            StateBuffer<Long, Slot> deques,
            int w,
            long oldestKept)
            throws Exception {
        int n = meta.counts.length;
        int m = itemIndexes.length;
        while (meta.heads[w] < meta.next && meta.headTimes[w] < oldestKept) {
            long seq = meta.heads[w];
            double oldValue = meta.headValues[w];
            meta.counts[w]--;
            meta.sums[w] -= oldValue;
            meta.sumsqs[w] -= oldValue * oldValue;
            for (int i = 0; i < m; i++) {
                String oldItem = meta.headItems[w * m + i];
                if (oldItem == null) {
                    continue;
                }
                String key = itemKey(i, oldItem);
                long[] itemCounts = items.get(key);
                if (--itemCounts[w] == 0) {
                    meta.distincts[i * n + w]--;
                }
                if (allZero(itemCounts)) {
                    items.remove(key);
                } else {
                    items.put(key, itemCounts);
                }
            }
            for (int d = MIN; d <= MAX; d++) {
                int f = 2 * w + d; // this window's front in deque d
                if (meta.dequeHeads[f] < meta.dequeTails[d] && meta.frontSeqs[f] == seq) {
                    // Only the longest window's front is the deque's first slot: the others'
                    // fronts are later slots, which longer windows still hold.
                    if (w == longest) {
                        deques.remove(slotKey(d, meta.dequeHeads[f]));
                    }
                    meta.dequeHeads[f]++;
                    if (meta.dequeHeads[f] < meta.dequeTails[d]) {
                        Slot front = deques.get(slotKey(d, meta.dequeHeads[f]));
                        meta.frontSeqs[f] = front.seq;
                        meta.frontValues[f] = front.value;
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
                for (int i = 0; i < m; i++) {
                    meta.headItems[w * m + i] = head.items[i];
                }
            }
        }
        if (meta.counts[w] == 0) {
            // Exact zero again: no float residue of added and removed values survives.
            meta.sums[w] = 0.0;
            meta.sumsqs[w] = 0.0;
        }
    }

    /** The cache_entries argument: NULL for the default, 0 for no cache, never negative. */
    static long cacheEntries(Integer argument) {
        if (argument == null) {
            return KeyCache.DEFAULT_MAX_ENTRIES;
        }
        if (argument < 0) {
            throw withoutRestarts(
                    new IllegalArgumentException(
                            "SLIDING_WINDOW_FEATURES: cache_entries must be 0 (no cache) or more,"
                                    + " not "
                                    + argument));
        }
        return argument;
    }

    /** The input's PARTITION BY value(s), as the key of its {@link KeyCache}. */
    private Object partitionKey(Row input) {
        if (partitionIndexes.length == 1) {
            return input.getField(partitionIndexes[0]);
        }
        Object[] values = new Object[partitionIndexes.length];
        for (int i = 0; i < values.length; i++) {
            values[i] = input.getField(partitionIndexes[i]);
        }
        return Arrays.asList(values);
    }

    /** The `items` state key of a value of item column i: the column, then the value. */
    private static String itemKey(int column, String value) {
        return (char) ('0' + column) + value;
    }

    private static boolean allZero(long[] counts) {
        for (long count : counts) {
            if (count != 0) {
                return false;
            }
        }
        return true;
    }

    /**
     * Append an event to deque d (min or max). Its back loses every slot that can never be a
     * window's min (max) again, this value being newer and at least as small (large); windows
     * whose front was among them, or that were empty, now start at the new slot, which every
     * window holds.
     */
    private void push(Meta meta, StateBuffer<Long, Slot> deques, int d, long seq, double value)
            throws Exception {
        long first = meta.dequeHeads[2 * longest + d];
        while (meta.dequeTails[d] > first) {
            double back = meta.backValues[d];
            if (d == MIN ? back < value : back > value) {
                break;
            }
            meta.dequeTails[d]--;
            deques.remove(slotKey(d, meta.dequeTails[d]));
            if (meta.dequeTails[d] > first) {
                meta.backValues[d] = deques.get(slotKey(d, meta.dequeTails[d] - 1)).value;
            }
        }
        long position = meta.dequeTails[d];
        Slot slot = new Slot();
        slot.seq = seq;
        slot.value = value;
        deques.put(slotKey(d, position), slot);
        for (int f = d; f < meta.dequeHeads.length; f += 2) {
            if (meta.dequeHeads[f] >= position) {
                meta.dequeHeads[f] = position;
                meta.frontSeqs[f] = seq;
                meta.frontValues[f] = value;
            }
        }
        meta.dequeTails[d] = position + 1;
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

    private void resolveColumns(Context ctx, String valueColumn, String itemColumns) {
        if (resolved) {
            return;
        }
        List<String> names =
                org.apache.flink.table.types.DataType.getFieldNames(
                        ctx.tableSemanticsFor("input").dataType());
        partitionIndexes = ctx.tableSemanticsFor("input").partitionByColumns();
        valueIndex = names.indexOf(valueColumn);
        if (valueIndex < 0) {
            throw withoutRestarts(
                    new IllegalArgumentException(
                            "SLIDING_WINDOW_FEATURES: value_column '" + valueColumn + "' not in "
                                    + names));
        }
        try {
            List<String> columns = parseItemColumns(itemColumns);
            itemIndexes = new int[columns.size()];
            for (int i = 0; i < itemIndexes.length; i++) {
                itemIndexes[i] = names.indexOf(columns.get(i));
                if (itemIndexes[i] < 0) {
                    throw new IllegalArgumentException(
                            "item_columns: '" + columns.get(i) + "' not in " + names);
                }
            }
        } catch (IllegalArgumentException error) {
            throw withoutRestarts(
                    new IllegalArgumentException(
                            "SLIDING_WINDOW_FEATURES: " + error.getMessage(), error));
        }
        resolved = true;
    }

    /**
     * "merchant_id, country, ip" -> its names; NULL or blank: none. Refuses empty names,
     * duplicates and more than {@link #MAX_ITEM_COLUMNS} columns.
     */
    static List<String> parseItemColumns(String spec) {
        List<String> columns = new ArrayList<>();
        if (spec == null || spec.isBlank()) {
            return columns;
        }
        for (String part : spec.split(",", -1)) {
            String name = part.trim();
            if (name.isEmpty()) {
                throw new IllegalArgumentException(
                        "item_columns '" + spec + "': empty column name");
            }
            if (columns.contains(name)) {
                throw new IllegalArgumentException(
                        "item_columns '" + spec + "': '" + name + "' named twice");
            }
            columns.add(name);
        }
        if (columns.size() > MAX_ITEM_COLUMNS) {
            throw new IllegalArgumentException(
                    "item_columns '" + spec + "': " + columns.size()
                            + " columns, at most " + MAX_ITEM_COLUMNS);
        }
        return columns;
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
    static RuntimeException withoutRestarts(RuntimeException error) {
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
