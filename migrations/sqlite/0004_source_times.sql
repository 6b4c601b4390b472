-- When the source says it created / last updated a target (a BSP reports these; Meta does not).
ALTER TABLE phone_numbers ADD COLUMN source_created_at TEXT;
ALTER TABLE phone_numbers ADD COLUMN source_updated_at TEXT;
ALTER TABLE wabas ADD COLUMN source_created_at TEXT;
ALTER TABLE wabas ADD COLUMN source_updated_at TEXT;
