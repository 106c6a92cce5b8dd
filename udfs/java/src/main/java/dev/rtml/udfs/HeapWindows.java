package dev.rtml.udfs;

import java.util.HashMap;
import java.util.Map;

import org.apache.flink.table.api.dataview.MapView;

/**
 * Every partition key's windows of one {@link SlidingWindowFeatures} instance on its heap instead of
 * in keyed state, for bounded runs that never checkpoint, restore or restart (rtml.offline:
 * backtests and training sets). Profiles of such runs showed the function's thread busy with
 * RocksDB gets and puts through JNI; here a key's meta value, log, item counts and deques are plain
 * objects and {@link MapView}s backed by hash maps, read and changed by the very same code, so the
 * features are the same.
 *
 * <p>Memory: a key is dropped once all its windows have emptied before the watermark (its next
 * event, later than the watermark, starts the key over anyway). The keys are checked once the
 * watermark has moved on by the longest window since the last check and at least as many events
 * have come as the check left keys: a check looks at no more than twice as many keys as events
 * came since the one before. So what stays is about what keyed state would hold: the keys seen
 * within the last two longest windows (or the last few events), with the events of their longest
 * window. An event behind the watermark (which rtml's sources dead-letter as late before it
 * gets here) may start a dropped key over where keyed state would still hold its windows.
 */
final class HeapWindows {

    /** Job parameter ({@code pipeline.global-job-parameters}) that turns this on: "true". */
    static final String JOB_PARAMETER = "rtml.sliding-windows.heap-state";

    /** One key's state, as the function's state arguments would hold it. */
    static final class Key {
        final SlidingWindowFeatures.Meta meta = new SlidingWindowFeatures.Meta();
        final MapView<Long, SlidingWindowFeatures.Entry> log = new MapView<>();
        final MapView<String, long[]> items = new MapView<>();
        final MapView<Long, SlidingWindowFeatures.Slot> deques = new MapView<>();
    }

    private final Map<Object, Key> byKey = new HashMap<>();
    private long eventsSinceCheck;
    private int keptByCheck; // keys the last check left
    private Long checkedAt; // the watermark of the last check

    /** The key's state, new if unknown; keys whose windows emptied before `watermark` may go. */
    Key of(Object key, Long watermark, long longestWindowMs) {
        eventsSinceCheck++;
        if (watermark != null
                && watermark != Long.MIN_VALUE // none yet
                && eventsSinceCheck >= keptByCheck
                && (checkedAt == null || watermark - checkedAt > longestWindowMs)) {
            // A key whose state was never written (newest still 0) goes at the first check.
            byKey.values().removeIf(held -> watermark - held.meta.newest > longestWindowMs);
            eventsSinceCheck = 0;
            keptByCheck = byKey.size();
            checkedAt = watermark;
        }
        return byKey.computeIfAbsent(key, unknown -> new Key());
    }

    /** Keys held now. */
    int size() {
        return byKey.size();
    }
}
