package dev.rtml.udfs;

import java.util.HashMap;
import java.util.Map;

import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * {@code COUNT_DEAD_LETTER(reason)}: returns {@code reason} unchanged and counts it in the Flink
 * metric {@code rtml_dead_letters.reason.<reason>.count} of the operator that evaluates it, so
 * every dead letter is counted by reason where it is written (sql/common/dead_letters.sql).
 *
 * <p>"reason" is a key/value metric group: reporters with labels (Prometheus) show one metric
 * {@code ..._rtml_dead_letters_count} with a {@code reason} label; the REST API lists it as
 * {@code <subtask>.<operator>.rtml_dead_letters.reason.<reason>.count}. Counters start at 0 when
 * the task starts: after a restart, records replayed from the last checkpoint count again.
 *
 * <p>Not deterministic, so the planner neither folds it into a constant nor evaluates it twice
 * per row. A NULL reason (a valid record) is returned as NULL and counted nowhere.
 */
public class CountDeadLetter extends ScalarFunction {

    /** The metric group every job's dead-letter counters live in. */
    public static final String GROUP = "rtml_dead_letters";

    private transient MetricGroup group;
    private transient Map<String, Counter> counters;

    @Override
    public void open(FunctionContext context) {
        group = context.getMetricGroup().addGroup(GROUP);
        counters = new HashMap<>();
    }

    public String eval(String reason) {
        if (reason != null) {
            counters.computeIfAbsent(reason, r -> group.addGroup("reason", r).counter("count"))
                    .inc();
        }
        return reason;
    }

    @Override
    public boolean isDeterministic() {
        return false;
    }
}
