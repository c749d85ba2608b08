-- Console fleet view and store story (docs/hq.md): what a store's report says about its devices,
-- alerts and time zone; its outbox depth at the report before (for "backlog growing"); indexes to
-- read one store's events by time and by type.
ALTER TABLE stores ADD COLUMN devices_total INTEGER;
ALTER TABLE stores ADD COLUMN devices_offline INTEGER;
ALTER TABLE stores ADD COLUMN open_alerts INTEGER;
ALTER TABLE stores ADD COLUMN open_alerts_warning INTEGER;
ALTER TABLE stores ADD COLUMN timezone TEXT;
ALTER TABLE stores ADD COLUMN outbox_prev INTEGER;
CREATE INDEX store_events_store_type ON store_events(store_id, type, received_ms);
CREATE INDEX store_events_store_received ON store_events(store_id, received_ms);
CREATE INDEX hq_events_created ON hq_events(created_ms);
