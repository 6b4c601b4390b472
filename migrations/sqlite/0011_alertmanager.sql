-- [alertmanager]: every open alert is posted again every minute, with the evidence of the
-- alert that opened it (the latest alert row per target and topic) and the alerts resolved
-- within the last few intervals; and each Alertmanager keeps only its latest snapshot row in
-- the outbox.
CREATE INDEX alerts_target_topic ON alerts (target_id, topic, id);
CREATE INDEX alerts_created ON alerts (created_at);
CREATE INDEX outbox_channel_recipient ON outbox (channel, recipient, id);
