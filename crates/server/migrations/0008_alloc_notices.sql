-- When an allocation's owners were told it expires within a week.
ALTER TABLE allocations ADD COLUMN expiry_noted_ms BIGINT;
