DROP TRIGGER devices_delete_readings ON devices;
DROP FUNCTION iotgate_delete_device_readings();
-- iotgate stores no reading without its device (its insert locks the
-- device, and the trigger deleted the readings of deleted devices); a
-- reading written by hand without one would fail the foreign key's
-- validation, so it goes first.
DELETE FROM readings r WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.id = r.device_id);
ALTER TABLE readings ADD CONSTRAINT readings_device_fkey FOREIGN KEY (device_id)
    REFERENCES devices (id) ON DELETE CASCADE;
