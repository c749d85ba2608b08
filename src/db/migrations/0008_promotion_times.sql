-- Schema 8: the price scheduler asks four times a second which promotions start or end in the
-- last quarter-second (`catalog::scheduler::boundaries`). Without an index on the instants SQLite
-- answered by scanning every promotion sku row (5,560 for 200 promotions in the pricing bench),
-- about 3 ms of CPU per tick on an idle box and a burst that showed in the HTTP latency tail;
-- with them the question reads the few promotions concerned (0.3 ms).
CREATE INDEX promotions_starts ON promotions(starts_ms);
CREATE INDEX promotions_ends ON promotions(ends_ms) WHERE ends_ms IS NOT NULL;
