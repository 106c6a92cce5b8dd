package dev.rtml.udfs;

import org.apache.flink.table.annotation.ArgumentHint;
import org.apache.flink.table.annotation.ArgumentTrait;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ProcessTableFunction;
import org.apache.flink.types.Row;

/**
 * {@code OWN_TASK(input => TABLE t PARTITION BY key)}: every row of {@code t} unchanged (plus a
 * constant column {@code own_task}), computed in a task of its own.
 *
 * <p>Flink chains operators joined by a forward edge into one thread, and a Python UDF makes that
 * thread wait while its bundle is in the Python worker. Partitioning by key puts a hash exchange
 * in front of this function, so what follows it (the Redis writer) runs in another thread, and the
 * operators before the exchange (the windows) keep working while the writer waits for Python.
 * Rows of one key stay in order: one key, one channel. No state.
 */
@DataTypeHint("ROW<own_task BOOLEAN>")
public class OwnTask extends ProcessTableFunction<Row> {

    private static final Row MARK = Row.of(true);

    public void eval(
            @ArgumentHint(
                            name = "input",
                            value = {
                                ArgumentTrait.SET_SEMANTIC_TABLE,
                                ArgumentTrait.PASS_COLUMNS_THROUGH
                            })
                    Row input) {
        collect(MARK);
    }
}
