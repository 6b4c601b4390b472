-- Which source's view a target follows when two sources report it: the one with the higher
-- priority (Meta 2, a BSP 1). Existing rows came from Meta sources.
ALTER TABLE phone_numbers ADD COLUMN source_priority INTEGER NOT NULL DEFAULT 2;
ALTER TABLE wabas ADD COLUMN source_priority INTEGER NOT NULL DEFAULT 2;
